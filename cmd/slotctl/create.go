package main

import (
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) createCmd() *cobra.Command {
	var (
		limit   int
		decay   float64
		disable bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME --limit N [--slot-decay-per-second F] [--disable]",
		Short: "Create a concurrency limit (or a rate limit, with slot decay)",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
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
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.CreateLimit(ctx, args[0], limit, opts...)
			if err != nil {
				return err
			}
			return printLimitResult(a.stdout, "created", info, asJSON)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "number of slots (required)")
	f.Float64Var(&decay, "slot-decay-per-second", 0, "make it a rate limit: occupied slots drain at this rate")
	f.BoolVar(&disable, "disable", false, "create the limit inactive (not enforced until enabled)")
	f.BoolVar(&asJSON, "json", false, "print the created limit as JSON")
	_ = cmd.MarkFlagRequired("limit")
	return cmd
}
