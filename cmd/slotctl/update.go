package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) updateCmd() *cobra.Command {
	var (
		limit           int
		decay           float64
		enable, disable bool
		revoke          bool
		by              string
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "update NAME [--limit N [--revoke [--by TEXT]]] [--slot-decay-per-second F] [--enable|--disable]",
		Short: "Change a limit's slots, slot decay or activity",
		Long: `update changes a limit. Raising --limit grants queued waiters at once.
Lowering it revokes nothing: the leases over the new limit run on until they
end. With --revoke the broker revokes the newest leases (the highest fencing
tokens first) until the slots held fit the new limit, as 'slotctl revoke'
would each (a revoked event with the reason "limit lowered to N" and --by;
the holders are told at once, and 'slotctl run' sends its command SIGTERM),
and update prints the leases revoked ("revoked" in --json).`,
		Example: `  slotctl update db --limit 20                    # raising it grants queued waiters at once
  slotctl update db --limit 2 --revoke --by ops   # and end the newest leases over 2 slots now
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
			if f.Changed("by") && !revoke {
				return usageError("update %s: --by names who revokes: give it with --revoke", args[0])
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			var opts []client.UpdateOption
			revoked := []string{}
			if revoke {
				opts = append(opts, client.RevokeExcess(by, &revoked))
			}
			info, err := cl.UpdateLimit(ctx, args[0], u, opts...)
			if err != nil {
				return flagValueError(err)
			}
			if !revoke {
				return printLimitResult(a.stdout, "updated", info, asJSON)
			}
			return printRevokedUpdate(a, info, revoked, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "new number of slots, 1 to 1000000000")
	f.Float64Var(&decay, "slot-decay-per-second", 0, "new slot decay (0: no longer a rate limit)")
	f.BoolVar(&enable, "enable", false, "enforce the limit")
	f.BoolVar(&disable, "disable", false, "stop enforcing the limit")
	f.BoolVar(&revoke, "revoke", false, "revoke the newest leases over a lowered --limit")
	f.StringVar(&by, "by", "", "who revokes, shown in the revoked events (with --revoke; at most 256 bytes)")
	f.BoolVar(&asJSON, "json", false, "print the updated limit as JSON")
	cmd.MarkFlagsMutuallyExclusive("enable", "disable")
	return cmd
}

// printRevokedUpdate prints an update with --revoke: the limit and the
// leases revoked, one a line, or as JSON the limit with "revoked" (a list,
// empty when nothing was revoked).
func printRevokedUpdate(a *app, info *client.LimitInfo, revoked []string, asJSON bool) error {
	if revoked == nil {
		revoked = []string{}
	}
	if asJSON {
		return printJSON(a.stdout, struct {
			*client.LimitInfo
			Revoked []string `json:"revoked"`
		}{normalize(info), revoked})
	}
	if err := printLimitResult(a.stdout, "updated", info, false); err != nil {
		return err
	}
	if len(revoked) == 0 {
		_, err := fmt.Fprintf(a.stdout, "revoked no lease: the slots held fit the limit\n")
		return err
	}
	for _, id := range revoked {
		if _, err := fmt.Fprintf(a.stdout, "revoked lease %s on %s\n", displayText(id), displayText(info.Name)); err != nil {
			return err
		}
	}
	return nil
}
