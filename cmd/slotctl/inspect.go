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
)

func (a *app) inspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a limit's configuration, holders and waiters",
		Example: `  slotctl inspect db            # who holds db's slots, who waits, since when
  slotctl inspect db --json     # the same for scripts`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.GetLimit(ctx, args[0])
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
	return cmd
}

// printInspect prints a limit's configuration and state, then its holders
// and waiters as tables. Text from the broker that users chose (holders)
// goes through displayText.
func printInspect(w io.Writer, info *client.LimitInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("Name", displayText(info.Name))
	row("Active", yesNo(info.Active))
	row("Limit", strconv.Itoa(info.Limit.Limit))
	decay := formatFloat(info.SlotDecayPerSecond)
	if info.SlotDecayPerSecond == 0 {
		decay += " (not a rate limit)"
	}
	row("Slot decay per second", decay)
	row("Active slots", strconv.Itoa(info.ActiveSlots))
	row("Denied slots", strconv.FormatInt(info.DeniedSlots, 10))
	if info.SlotDecayPerSecond > 0 {
		row("Next slot in", nextSlot(info))
	}
	row("Created", formatTime(info.CreatedAt, now))
	row("Updated", formatTime(info.UpdatedAt, now))
	if err := tw.Flush(); err != nil {
		return err
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
			rows = append(rows, []string{strconv.Itoa(wt.Position), strconv.Itoa(wt.Occupy), holder, formatTime(wt.Since, now)})
		}
		if err := printTable(w, []string{"position", "occupy", "holder", "waiting since"}, rows); err != nil {
			return err
		}
	}
	return nil
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
