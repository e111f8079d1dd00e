package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) watchCmd() *cobra.Command {
	var asJSON bool
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "watch [NAME]",
		Short: "Print the broker's events as they happen, until interrupted",
		Example: `  slotctl watch             # every limit's events, one line each (Ctrl-C ends it)
  slotctl watch db --json   # db's events as JSON lines
  slotctl watch --since 10m # the last 10 minutes' events, then the new ones
                            # (needs slotbroker --event-retention)`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("watch takes at most one limit name, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if since < 0 {
				return usageError("--since %v: give a positive duration, e.g. 10m", since)
			}
			if len(args) == 1 {
				name = args[0]
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), forwarded...)
			defer stop()
			if a.nc != nil {
				// --since reads a stream that keeps what came meanwhile.
				defer a.reportConnection(a.nc, since == 0)()
			}
			var mu sync.Mutex
			var werr error
			watch := cl.Watch
			if since > 0 {
				// The broker's events stream, from since ago: no event
				// missed or doubled between the past and the live ones.
				watch = func(ctx context.Context, name string, fn func(client.Event)) error {
					return watchStream(ctx, a.nc, a.prefix, name, since, fn)
				}
			}
			err = watch(ctx, name, func(ev client.Event) {
				mu.Lock()
				defer mu.Unlock()
				if werr != nil {
					return
				}
				if asJSON {
					werr = writeJSONLine(a.stdout, ev)
				} else {
					_, werr = io.WriteString(a.stdout, eventLine(ev)+"\n")
				}
				if werr != nil {
					stop()
				}
			})
			mu.Lock()
			defer mu.Unlock()
			if werr != nil {
				return fmt.Errorf("write event: %w", werr)
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as one JSON line")
	cmd.Flags().DurationVar(&since, "since", 0, "first print the events of this long ago until now, e.g. 10m, then follow the new ones; needs a broker started with --event-retention (without it: exit 69, events are not kept)")
	return cmd
}

// reportConnection prints a line on stderr when nc loses its connection
// and when it has it back, saying, when missed is set, that the events
// published meanwhile are missed (core NATS keeps none). The returned func
// stops it.
func (a *app) reportConnection(nc *nats.Conn, missed bool) func() {
	lostMsg, backMsg := "watch: lost the connection to NATS; reconnecting", "watch: reconnected to %s"
	if missed {
		lostMsg += " (events are missed until it is back)"
		backMsg += "; events published while disconnected were missed"
	}
	ch := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CONNECTED)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lost := false
		for st := range ch {
			switch {
			case st == nats.CONNECTED && lost:
				lost = false
				a.warn.Warn(fmt.Sprintf(backMsg, nc.ConnectedUrlRedacted()))
			case st != nats.CONNECTED && !lost:
				lost = true
				a.warn.Warn(lostMsg)
			}
		}
	}()
	return func() {
		nc.RemoveStatusListener(ch)
		<-done
	}
}

// writeJSONLine writes v as compact JSON on one line.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// eventLine renders an event: time, limit, kind, then the fields it has.
// Its texts are quoted (%q) or go through displayText: anyone who may
// publish on the events subjects chooses them, and a holder is any user's.
func eventLine(ev client.Event) string {
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	parts := []string{at.Local().Format("2006-01-02T15:04:05.000Z07:00"), displayText(ev.Limit), displayText(ev.Kind)}
	if ev.Key != "" {
		parts = append(parts, "key="+displayText(ev.Key))
	}
	if ev.LeaseID != "" {
		parts = append(parts, "lease="+displayText(ev.LeaseID))
	}
	if ev.Holder != "" {
		parts = append(parts, fmt.Sprintf("holder=%q", ev.Holder))
	}
	if ev.Occupy != 0 {
		parts = append(parts, fmt.Sprintf("occupy=%d", ev.Occupy))
	}
	if ev.Token != 0 {
		parts = append(parts, fmt.Sprintf("token=%d", ev.Token))
	}
	if c := ev.Config; c != nil {
		parts = append(parts, fmt.Sprintf("limit=%d slot_decay_per_second=%s active=%t", c.Limit, formatFloat(c.SlotDecayPerSecond), c.Active))
	}
	if ev.Reason != "" {
		parts = append(parts, fmt.Sprintf("reason=%q", ev.Reason))
	}
	if ev.By != "" {
		parts = append(parts, fmt.Sprintf("by=%q", ev.By))
	}
	parts = append(parts, fmt.Sprintf("available=%d", ev.Available))
	return strings.Join(parts, " ")
}
