package main

import (
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) updateCmd() *cobra.Command {
	var (
		limit           int
		decay           float64
		enable, disable bool
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "update NAME [--limit N] [--slot-decay-per-second F] [--enable|--disable]",
		Short: "Change a limit's slots, slot decay or activity",
		Example: `  slotctl update db --limit 20                    # raising it grants queued waiters at once
  slotctl update api --slot-decay-per-second 10   # keeps the bucket's level
  slotctl update db --disable                     # same as slotctl disable db`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var u client.LimitUpdate
			if f.Changed("limit") {
				if err := checkLimitFlag("update", limit); err != nil {
					return err
				}
				u.Limit = client.Ptr(limit)
			}
			if f.Changed("slot-decay-per-second") {
				// With the limit unchanged, the broker checks the drain time.
				if err := checkDecayFlag("update", 0, decay); err != nil {
					return err
				}
				if u.Limit != nil {
					if err := checkDecayFlag("update", limit, decay); err != nil {
						return err
					}
				}
				u.SlotDecayPerSecond = client.Ptr(decay)
			}
			if f.Changed("enable") && enable || f.Changed("disable") && !disable {
				u.Active = client.Ptr(true)
			} else if f.Changed("enable") || f.Changed("disable") {
				u.Active = client.Ptr(false)
			}
			if u.Limit == nil && u.SlotDecayPerSecond == nil && u.Active == nil {
				return usageError("update %s: nothing to change: give --limit, --slot-decay-per-second, --enable or --disable", args[0])
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.UpdateLimit(ctx, args[0], u)
			if err != nil {
				return flagValueError(err)
			}
			return printLimitResult(a.stdout, "updated", info, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "new number of slots, 1 to 1000000000")
	f.Float64Var(&decay, "slot-decay-per-second", 0, "new slot decay (0: no longer a rate limit)")
	f.BoolVar(&enable, "enable", false, "enforce the limit")
	f.BoolVar(&disable, "disable", false, "stop enforcing the limit")
	f.BoolVar(&asJSON, "json", false, "print the updated limit as JSON")
	cmd.MarkFlagsMutuallyExclusive("enable", "disable")
	return cmd
}
