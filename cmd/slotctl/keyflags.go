package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/messages"
)

// checkKeyPriority checks --key and --priority of run or rate (verb) on
// the limit names of its first argument: a key belongs to one per-key
// limit, so it goes with one name only; a priority is 0 to
// messages.MaxPriority. The key's characters are checked by the client
// (a bad key is a bad name: exit 65).
func checkKeyPriority(verb, names string, cmd *cobra.Command, key string, priority int) error {
	if priority < 0 || priority > messages.MaxPriority {
		return usageError("%s: --priority must be 0 (the default, lowest) to %d, not %d", verb, messages.MaxPriority, priority)
	}
	if cmd.Flags().Changed("key") && strings.Contains(names, ",") {
		return usageError("%s: --key takes slots of one key of one per-key limit: give one limit name, not %q", verb, names)
	}
	return nil
}
