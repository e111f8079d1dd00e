package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func (a *app) revokeCmd() *cobra.Command {
	var reason, by, key string
	cmd := &cobra.Command{
		Use:   "revoke LIMIT LEASE_ID [--reason TEXT] [--key KEY]",
		Short: "End a lease someone else holds: its slots are freed at once",
		Long: `revoke ends the lease LEASE_ID held on LIMIT (the first limit it holds slots
on; 'slotctl inspect LIMIT' lists the leases): its slots go to the next
waiter, a revoked event carries --reason, and the holder is told at once
(the broker pushes it a notice; one that misses it learns at its next
renewal): a Go holder's lease ends, and slotctl run sends its command
SIGTERM, as for a lost lease.

A lease that is not held (already released, expired or revoked) revokes
nothing: revoke says so and exits 65.

A lease of one key of a per-key limit is revoked with --key ('slotctl inspect
LIMIT --key KEY' lists the key's leases).`,
		Example: `  slotctl revoke db 5TQX2B7LJ3Q4ZK7M --reason "stuck migration"
  slotctl revoke tenant 5TQX2B7LJ3Q4ZK7M --key acme   # a lease of key acme of the per-key limit tenant`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError("revoke takes a limit name and a lease id, got %d arguments (see 'slotctl revoke --help')", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, id := args[0], args[1]
			if cmd.Flags().Changed("key") {
				limit = messages.KeyedName(limit, key)
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			var opts []client.RevokeOption
			if by != "" {
				opts = append(opts, client.RevokedBy(by))
			}
			ok, err := cl.RevokeLease(ctx, limit, id, reason, opts...)
			if err != nil {
				return err
			}
			if !ok {
				fmt.Fprintf(a.stderr, "slotctl: lease %s is not held on %s (already released, expired or revoked): nothing was revoked\n",
					displayText(id), displayText(limit))
				return exitStatus{code: exitDataErr}
			}
			fmt.Fprintf(a.stdout, "revoked lease %s on %s\n", displayText(id), displayText(limit))
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the lease is revoked, shown in the revoked event (at most 256 bytes)")
	cmd.Flags().StringVar(&by, "by", "", "who revokes, shown in the revoked event (at most 256 bytes)")
	cmd.Flags().StringVar(&key, "key", "", "the key of a per-key limit whose lease LEASE_ID is")
	return cmd
}
