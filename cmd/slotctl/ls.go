package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) lsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List every limit",
		Long: `ls lists every limit with its configuration and live state. A per-key limit
is one row: its "keys" column says "per-key" and how many keys are live, and
its active slots, holders and waiters are its keys' added up (its limit is
each key's; 'slotctl inspect NAME' shows each key).`,
		Example: `  slotctl ls
  slotctl ls --json | jq -r '.[] | select(.waiters_total > 0) | .name'   # the limits with waiters`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("ls takes no arguments, got %q (see 'slotctl ls --help')", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			limits, err := cl.ListLimits(ctx)
			if err != nil {
				return err
			}
			if limits == nil {
				limits = []client.LimitInfo{}
			}
			if asJSON {
				for i := range limits {
					normalize(&limits[i])
				}
				return printJSON(a.stdout, limits)
			}
			rows := make([][]string, 0, len(limits))
			for _, l := range limits {
				rows = append(rows, []string{displayText(l.Name), yesNo(l.Active), strconv.Itoa(l.Limit.Limit), strconv.Itoa(l.ActiveSlots),
					formatFloat(l.SlotDecayPerSecond), nextSlot(&l), strconv.Itoa(max(l.HoldersTotal, len(l.Holders))), strconv.Itoa(max(l.WaitersTotal, len(l.Waiters))),
					keysCell(&l)})
			}
			return printTable(a.stdout, []string{"name", "active", "limit", "active slots", "slot decay per second", "next slot in",
				"holders", "waiters", "keys"}, rows)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the limits as a JSON array")
	return cmd
}

// keysCell is ls's "keys" column: "-" for a plain limit, "per-key (N live)"
// for a per-key limit with N live keys.
func keysCell(l *client.LimitInfo) string {
	if !l.PerKey {
		return "-"
	}
	return fmt.Sprintf("per-key (%d live)", max(l.KeysTotal, len(l.Keys)))
}
