package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func (a *app) inspectCmd() *cobra.Command {
	var (
		asJSON bool
		key    string
	)
	cmd := &cobra.Command{
		Use:   "inspect NAME [--key KEY]",
		Short: "Show a limit's configuration, holders and waiters",
		Example: `  slotctl inspect db            # who holds db's slots, who waits, since when, and how much longer
  slotctl inspect db --json     # the same for scripts
  slotctl inspect tenant        # a per-key limit: its live keys, their slots, holders and waiters
  slotctl inspect tenant --key acme   # one key's holders and waiters`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			var info *client.LimitInfo
			if cmd.Flags().Changed("key") {
				info, err = cl.GetKey(ctx, args[0], key)
			} else {
				info, err = cl.GetLimit(ctx, args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, normalize(info))
			}
			return printInspect(a.stdout, info, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the limit as a JSON object")
	cmd.Flags().StringVar(&key, "key", "", "show one key of a per-key limit (an idle key shows no holders or waiters)")
	return cmd
}

// printInspect prints a limit's configuration and state, then its holders
// and waiters as tables. Text from the broker that users chose (holders)
// goes through displayText.
func printInspect(w io.Writer, info *client.LimitInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", displayText(info.Name))
	if info.Key != "" {
		row("Key", displayText(info.Key))
	} else if info.PerKey {
		row("Per key", fmt.Sprintf("yes: each key has %s of its own (%s)", plural(info.Limit.Limit, "slot"), plural(max(info.KeysTotal, len(info.Keys)), "live key")))
	}
	row("Active", yesNo(info.Active))
	row("Limit", strconv.Itoa(info.Limit.Limit))
	decay := formatFloat(info.SlotDecayPerSecond)
	if info.SlotDecayPerSecond == 0 {
		decay += " (not a rate limit)"
	}
	row("Slot decay per second", decay)
	if info.PerKey && info.Key == "" {
		row("Active slots", strconv.Itoa(info.ActiveSlots)+" (all keys)")
	} else {
		row("Active slots", strconv.Itoa(info.ActiveSlots))
	}
	row("Denied slots", strconv.FormatInt(info.DeniedSlots, 10))
	if info.SlotDecayPerSecond > 0 {
		row("Next slot in", nextSlot(info))
	}
	row("Created", formatTime(info.CreatedAt, now))
	row("Updated", formatTime(info.UpdatedAt, now))
	if err := tw.Flush(); err != nil {
		return err
	}

	if info.PerKey && info.Key == "" {
		return printKeys(w, info) // a family holds nothing itself: its keys do
	}
	fmt.Fprintf(w, "\nHolders %s:\n", countShown(info.HoldersTotal, len(info.Holders)))
	if len(info.Holders) > 0 {
		rows := make([][]string, 0, len(info.Holders))
		for _, h := range info.Holders {
			rows = append(rows, []string{displayText(h.LeaseID), strconv.Itoa(h.Occupy), orDash(displayText(h.Holder)),
				strconv.FormatUint(h.Token, 10), formatTime(h.AcquiredAt, now), formatTime(h.ExpiresAt, now)})
		}
		if err := printTable(w, []string{"lease id", "occupy", "holder", "token", "acquired", "expires"}, rows); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\nWaiters %s:\n", countShown(info.WaitersTotal, len(info.Waiters)))
	if len(info.Waiters) > 0 {
		rows := make([][]string, 0, len(info.Waiters))
		for _, wt := range info.Waiters {
			holder := orDash(displayText(wt.Holder))
			if len(wt.Names) > 1 {
				holder += " (with " + displayText(strings.Join(wt.Names, ",")) + ")"
			}
			rows = append(rows, []string{strconv.Itoa(wt.Position), strconv.Itoa(wt.Occupy), priorityCell(wt), holder,
				formatTime(wt.Since, now), estimateCell(wt.Estimate)})
		}
		if err := printTable(w, []string{"position", "occupy", "priority", "holder", "waiting since", "estimate"}, rows); err != nil {
			return err
		}
	}
	return nil
}

// priorityCell is a waiter's priority, and its effective priority when
// waiting raised it: "0", "2 (now 5)".
func priorityCell(wt messages.Waiter) string {
	if wt.EffectivePriority > wt.Priority {
		return fmt.Sprintf("%d (now %d)", wt.Priority, wt.EffectivePriority)
	}
	return strconv.Itoa(wt.Priority)
}

// countShown is a list's total, and how many of them the broker listed
// when fewer (a reply lists fewer than all when they would not fit the
// server's max payload): "(12) (showing 5)", else "(12)". A broker that
// sends no total lists all.
func countShown(total, shown int) string {
	if total <= shown {
		return fmt.Sprintf("(%d)", shown)
	}
	return fmt.Sprintf("(%d) (showing %d)", total, shown)
}

// printKeys prints a per-key limit's live keys: "N live keys" and a table
// of each key's active slots, holders and waiters.
func printKeys(w io.Writer, info *client.LimitInfo) error {
	total := max(info.KeysTotal, len(info.Keys))
	line := plural(total, "live key")
	if total > len(info.Keys) {
		line += fmt.Sprintf(" (showing %d)", len(info.Keys))
	}
	fmt.Fprintf(w, "\n%s", line)
	if total == 0 {
		_, err := fmt.Fprintf(w, ": a key's limit is created by its first acquisition (slotctl run %s --key KEY -- ...)\n", displayText(info.Name))
		return err
	}
	fmt.Fprintf(w, " (slotctl inspect %s --key KEY for one key's holders and waiters):\n", displayText(info.Name))
	rows := make([][]string, 0, len(info.Keys))
	for _, k := range info.Keys {
		rows = append(rows, []string{displayText(k.Key), strconv.Itoa(k.ActiveSlots), strconv.Itoa(k.HoldersTotal), strconv.Itoa(k.WaitersTotal)})
	}
	return printTable(w, []string{"key", "active slots", "holders", "waiters"}, rows)
}
