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

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

func (a *app) watchCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [NAME]",
		Short: "Print the broker's events as they happen, until interrupted",
		Example: `  slotctl watch             # every limit's events, one line each (Ctrl-C ends it)
  slotctl watch db --json   # db's events as JSON lines`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("watch takes at most one limit name, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), forwarded...)
			defer stop()
			var mu sync.Mutex
			var werr error
			err = cl.Watch(ctx, name, func(ev client.Event) {
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
	return cmd
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
	parts = append(parts, fmt.Sprintf("available=%d", ev.Available))
	return strings.Join(parts, " ")
}
