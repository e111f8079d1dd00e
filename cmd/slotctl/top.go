package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/slotbroker/slotbroker/client"
)

// ANSI codes of top's live mode.
const (
	ansiHome      = "\x1b[H"  // cursor to the top left
	ansiClear     = "\x1b[2J" // erase the screen
	ansiEraseLine = "\x1b[K"  // erase to the end of the line
	ansiEraseDown = "\x1b[J"  // erase below the cursor
)

// topBarWidth is the width of a limit's bar of slots, in characters.
const topBarWidth = 20

func (a *app) topCmd() *cobra.Command {
	var once bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show every limit's slots, waiters and rate level, refreshed in place",
		Long: `top shows every limit as a row: its slots held against the limit as a bar,
its waiters, a rate limit's level (slots not yet drained) and next slot, and
how long the oldest holder has held and the oldest waiter has waited.

On a terminal it redraws every --interval until interrupted (Ctrl-C); with
--once, or when standard output is not a terminal, it prints one frame and
exits. The same view is in a browser at the daemon's --http address.`,
		Example: `  slotctl top                 # refreshed every second until Ctrl-C
  slotctl top --once          # one frame, e.g. for a log or a script`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("top takes no arguments, got %q (see 'slotctl top --help')", args)
			}
			if interval < 100*time.Millisecond {
				return usageError("--interval must be at least 100ms, not %v", interval)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			list := func(ctx context.Context) ([]client.LimitInfo, error) {
				ctx, cancel := a.requestContext(ctx)
				defer cancel()
				return cl.ListLimits(ctx)
			}
			if once || !stdoutIsTerminal(a.stdout) {
				limits, err := list(context.Background())
				if err != nil {
					return err
				}
				return writeTopFrame(a.stdout, limits, time.Now())
			}
			ctx, stop := signal.NotifyContext(context.Background(), forwarded...)
			defer stop()
			return runTop(ctx, a.stdout, list, interval, a.serverURL())
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between redraws on a terminal")
	return cmd
}

// stdoutIsTerminal reports whether w is a terminal (a variable for the tests).
var stdoutIsTerminal = func(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// runTop redraws the limits list returns on w every interval until ctx
// ends: each frame goes over the last one (cursor home, each line erased
// to its end, the rest of the screen erased), so it does not flicker. An
// error listing the limits is shown in the frame and tried again.
func runTop(ctx context.Context, w io.Writer, list func(context.Context) ([]client.LimitInfo, error),
	interval time.Duration, server string) error {
	if _, err := io.WriteString(w, ansiHome+ansiClear); err != nil {
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		limits, lerr := list(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		var frame bytes.Buffer
		fmt.Fprintf(&frame, "slotctl top · %s · %s · every %v, Ctrl-C ends\n\n", displayText(server), now.Format("15:04:05"), interval)
		if lerr != nil {
			fmt.Fprintf(&frame, "cannot list the limits: %s\n", displayText(lerr.Error()))
		} else if err := writeTopFrame(&frame, limits, now); err != nil {
			return err
		}
		out := ansiHome + strings.ReplaceAll(frame.String(), "\n", ansiEraseLine+"\n") + ansiEraseDown
		if _, err := io.WriteString(w, out); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// writeTopFrame writes one frame: a row per limit under a header.
func writeTopFrame(w io.Writer, limits []client.LimitInfo, now time.Time) error {
	if len(limits) == 0 {
		_, err := io.WriteString(w, "no limits (create one: slotctl create NAME --limit N)\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tSLOTS\t\tWAITERS\tRATE LEVEL\tOLDEST HOLDER\tOLDEST WAITER")
	for i := range limits {
		l := &limits[i]
		name := displayText(l.Name)
		if !l.Active {
			name += " (inactive)"
		}
		waiters := max(l.WaitersTotal, len(l.Waiters))
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\n", name, slotBar(l.ActiveSlots, l.Limit.Limit, topBarWidth),
			l.ActiveSlots, l.Limit.Limit, waiters, rateLevel(l), oldestHolder(l, now), oldestWaiter(l, now))
	}
	return tw.Flush()
}

// slotBar draws used of limit slots as a bar of width characters, full
// when used reaches the limit (or passes it, after the limit was lowered).
func slotBar(used, limit, width int) string {
	n := width
	if limit > 0 && used < limit {
		n = used * width / limit
		if used > 0 && n == 0 {
			n = 1 // anything held shows
		}
	}
	if used <= 0 {
		n = 0
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// rateLevel is a rate limit's level and how it drains: "3/5 -2/s, next
// 250ms"; "-" for a limit without slot decay.
func rateLevel(l *client.LimitInfo) string {
	if l.SlotDecayPerSecond <= 0 {
		return "-"
	}
	next := "free"
	if l.ActiveSlots >= l.Limit.Limit {
		next = "next " + nextSlot(l)
	}
	return fmt.Sprintf("%d/%d -%s/s, %s", l.ActiveSlots, l.Limit.Limit, formatFloat(l.SlotDecayPerSecond), next)
}

// oldestHolder is how long the limit's longest holder has held; "-" for none.
func oldestHolder(l *client.LimitInfo, now time.Time) string {
	var oldest time.Time
	for _, h := range l.Holders {
		if !h.AcquiredAt.IsZero() && (oldest.IsZero() || h.AcquiredAt.Before(oldest)) {
			oldest = h.AcquiredAt
		}
	}
	return age(oldest, now)
}

// oldestWaiter is how long the limit's longest waiter has waited; "-" for none.
func oldestWaiter(l *client.LimitInfo, now time.Time) string {
	var oldest time.Time
	for _, wt := range l.Waiters {
		if !wt.Since.IsZero() && (oldest.IsZero() || wt.Since.Before(oldest)) {
			oldest = wt.Since
		}
	}
	return age(oldest, now)
}

// age renders the time since t compactly: "0s", "42s", "3m05s", "2h03m",
// "4d02h"; "-" for the zero time.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0)
	s := int(d / time.Second)
	switch {
	case s < 60:
		return strconv.Itoa(s) + "s"
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	}
}
