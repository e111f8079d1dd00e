package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) rateCmd() *cobra.Command {
	var (
		occupy  int
		timeout time.Duration
		strict  bool
	)
	cmd := &cobra.Command{
		Use:   "rate NAME[,NAME...] [--occupy N] [--timeout DUR] [--strict]",
		Short: "Wait for rate-limit admission: exit 0 when admitted, 75 on timeout",
		Args:  exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if occupy <= 0 {
				return usageError("rate: --occupy must be at least 1, not %d", occupy)
			}
			if timeout < 0 {
				return usageError("rate: --timeout must not be negative")
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			names := strings.Split(args[0], ",")
			var opts []client.AcquireOption
			if len(names) > 1 {
				opts = append(opts, client.WithNames(names[1:]...))
			}
			if timeout > 0 {
				opts = append(opts, client.WithTimeout(timeout))
			}
			if strict {
				opts = append(opts, client.WithStrict())
			}
			ctx, stop := signal.NotifyContext(context.Background(), forwarded...)
			defer stop()
			err = cl.RateLimit(ctx, names[0], occupy, opts...)
			if err != nil && ctx.Err() != nil {
				return interrupted(os.Interrupt, names)
			}
			if err != nil && timeout > 0 && errors.Is(err, client.ErrTimeout) {
				return fmt.Errorf("%w on %s within --timeout %v", err, args[0], timeout)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&occupy, "occupy", 1, "slots to take on each limit")
	f.DurationVar(&timeout, "timeout", 0, "give up waiting after this long, with exit status 75 (0: wait forever)")
	f.BoolVar(&strict, "strict", false, "fail when a limit is missing or inactive instead of passing unlimited")
	return cmd
}
