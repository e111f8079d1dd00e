package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) rateCmd() *cobra.Command {
	var (
		occupy   int
		timeout  time.Duration
		strict   bool
		try      bool
		key      string
		priority int
	)
	cmd := &cobra.Command{
		Use:   "rate NAME[,NAME...] [--occupy N] [--timeout DUR | --try] [--strict] [--key KEY] [--priority P]",
		Short: "Wait for rate-limit admission: exit 0 when admitted, 75 on timeout",
		Long: `rate takes --occupy slots of every named rate limit (a limit with
--slot-decay-per-second), all or nothing, and exits 0 once admitted: the slots
are never given back, they decay. It waits in the limit's queue as long as it
takes; --timeout gives up after a while, --try does not wait at all: both exit
75 when not admitted.

A limit that does not exist or is inactive is not enforced: rate warns and
exits 0. --strict, or SLOTCTL_STRICT=1 in the environment, makes that an error
instead (exit 65); --strict=false overrides the variable.`,
		Example: `  while read -r id; do slotctl rate api && curl -s "https://api.example.com/items/$id"; done < ids.txt
  slotctl rate api --occupy 10 --timeout 30s   # a batch of 10 calls
  slotctl rate api --try || echo "over the rate: $?"   # never wait: 75 when not admitted now
  slotctl rate tenant-api --key acme                  # the rate of key acme of a per-key rate limit`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			if occupy <= 0 {
				return usageError("rate: --occupy must be at least 1, not %d", occupy)
			}
			if timeout < 0 {
				return usageError("rate: --timeout must not be negative, not %v (0: wait forever)", timeout)
			}
			if try && cmd.Flags().Changed("timeout") {
				return usageError("rate: give --try or --timeout, not both: --try never waits")
			}
			if err := checkKeyPriority("rate", args[0], cmd, key, priority); err != nil {
				return err
			}
			strict, err := strictMode(cmd, strict)
			if err != nil {
				return err
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
			if cmd.Flags().Changed("key") {
				opts = append(opts, client.WithKey(key))
			}
			if priority != 0 {
				opts = append(opts, client.WithPriority(priority))
			}
			ctx, stop := signal.NotifyContext(context.Background(), forwarded...)
			defer stop()
			if try {
				err = cl.TryRateLimit(ctx, names[0], occupy, opts...)
			} else {
				err = cl.RateLimit(ctx, names[0], occupy, opts...)
			}
			switch {
			case err == nil:
				return nil
			case ctx.Err() != nil:
				return interrupted(os.Interrupt, names)
			case try && errors.Is(err, client.ErrNoSlots):
				return noSlotFree(err, "rate-limit admission of "+slotsOn(occupy, names))
			case timeout > 0 && errors.Is(err, client.ErrTimeout):
				return timedOut(err, timeout, "rate-limit admission of "+slotsOn(occupy, names))
			}
			return flagValueError(err)
		},
	}
	f := cmd.Flags()
	f.IntVar(&occupy, "occupy", 1, "slots to take on each limit")
	f.DurationVar(&timeout, "timeout", 0, "give up waiting after this long, with exit status 75 (0: wait forever)")
	f.BoolVar(&strict, "strict", false, "fail (exit 65) when a limit is missing or inactive instead of passing unlimited ("+strictEnv+"=1 in the environment sets it)")
	f.BoolVar(&try, "try", false, "never wait: exit 75 at once when not admitted now")
	f.StringVar(&key, "key", "", "the key to be admitted on, in a per-key rate limit (created with --per-key)")
	f.IntVar(&priority, "priority", 0, "queue at this priority, 0 (lowest) to 9: higher is served first; waiting raises it")
	return cmd
}
