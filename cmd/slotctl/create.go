package main

import (
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func (a *app) createCmd() *cobra.Command {
	var (
		limit   int
		decay   float64
		disable bool
		perKey  bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --limit N [--slot-decay-per-second F] [--disable] [--per-key]",
		Short: "Create a concurrency limit (or a rate limit, with slot decay)",
		Long: `create creates a limit of --limit slots, 1 to 1,000,000,000. With
--slot-decay-per-second it is a rate limit: occupied slots drain at that rate.
With --per-key it is a per-key limit: every key (run and rate --key KEY) gets
--limit slots of its own, created on first use and dropped when idle; updating
the limit applies to every key. Whether a limit is per-key cannot be changed
later: delete it and create it again.
The values are checked before the broker is asked (exit 64 when invalid); a
name that exists already exits 65.`,
		Example: `  slotctl create db --limit 10                              # at most 10 holders at once
  slotctl create api --limit 5 --slot-decay-per-second 50   # bursts of 5, then 50 a second
  slotctl create batch --limit 2 --disable                  # not enforced until enabled
  slotctl create tenant --limit 2 --per-key                 # 2 slots for each key: slotctl run tenant --key acme -- ...`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkLimitFlag("create", limit); err != nil {
				return err
			}
			if err := checkDecayFlag("create", limit, decay); err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			var opts []client.LimitOption
			if decay != 0 {
				opts = append(opts, client.WithSlotDecay(decay))
			}
			if disable {
				opts = append(opts, client.WithInactive())
			}
			if perKey {
				opts = append(opts, client.PerKey())
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.CreateLimit(ctx, args[0], limit, opts...)
			if err != nil {
				return flagValueError(err)
			}
			if info.PerKey && !asJSON {
				_, err = fmt.Fprintf(a.stdout, "created %s, per key\n", summary(info))
				return err
			}
			return printLimitResult(a.stdout, "created", info, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "number of slots, 1 to 1000000000 (required)")
	f.Float64Var(&decay, "slot-decay-per-second", 0, "make it a rate limit: occupied slots drain at this rate")
	f.BoolVar(&disable, "disable", false, "create the limit inactive (not enforced until enabled)")
	f.BoolVar(&perKey, "per-key", false, "make it a per-key limit: each key (run and rate --key) has --limit slots of its own")
	f.BoolVar(&asJSON, "json", false, "print the created limit as JSON")
	_ = cmd.MarkFlagRequired("limit")
	return cmd
}

// decayFlagMax is the largest slot_decay_per_second the broker accepts
// (PROTOCOL.md §3.1).
const decayFlagMax = 1e6

// checkLimitFlag checks --limit of create or update. The protocol allows 0
// slots, but with 0 every acquisition fails (PROTOCOL.md §5.7): it is no
// pause, nothing waits, so slotctl refuses it and points to disable.
func checkLimitFlag(verb string, limit int) error {
	switch {
	case limit < 0:
		return usageError("%s: --limit must be at least 1, not %d", verb, limit)
	case limit < 1:
		return usageError("%s: --limit must be at least 1, not %d: a limit of 0 slots could never grant one, so every run and rate on it would fail (to stop enforcing a limit, disable it: slotctl disable NAME)", verb, limit)
	case limit > messages.MaxLimit:
		return usageError("%s: --limit must be at most %d, not %d", verb, messages.MaxLimit, limit)
	}
	return nil
}

// checkDecayFlag checks --slot-decay-per-second as the broker would
// (PROTOCOL.md §3.1); limit is the limit it will apply to, 0 when unknown.
func checkDecayFlag(verb string, limit int, decay float64) error {
	if decay < 0 || math.IsNaN(decay) || math.IsInf(decay, 0) || decay > decayFlagMax {
		return usageError("%s: --slot-decay-per-second must be a number from 0 (no decay) to %g, not %v", verb, float64(decayFlagMax), decay)
	}
	if drain := messages.MaxDrain.Seconds(); decay > 0 && float64(limit)/decay > drain {
		return usageError("%s: --slot-decay-per-second %g is too slow for --limit %d: a full bucket would take more than 100 years to drain; give at least %g",
			verb, decay, limit, float64(limit)/drain)
	}
	return nil
}
