package main

import "github.com/spf13/cobra"

func (a *app) enableCmd() *cobra.Command {
	return a.setActiveCmd("enable", "Enforce a limit", true, "enabled",
		"  slotctl enable db     # new acquisitions are counted again")
}

// setActiveCmd is enable or disable.
func (a *app) setActiveCmd(verb, short string, active bool, done, example string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     verb + " NAME",
		Short:   short,
		Example: example,
		Args:    exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.SetActive(ctx, args[0], active)
			if err != nil {
				return err
			}
			return printLimitResult(a.stdout, done, info, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the limit as JSON")
	return cmd
}
