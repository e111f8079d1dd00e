package client

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// Event is a broker event: acquired, released, expired, available, admitted,
// created, changed, deleted.
type Event = messages.Event

// Watch calls fn for every event on the limit name (every limit when name is
// "") until ctx ends, and returns ctx's error; or until the Client or its
// connection is closed, and returns ErrClosed. fn runs on one goroutine, in order.
func (c *Client) Watch(ctx context.Context, name string, fn func(Event)) error {
	if name != "" {
		if err := checkName(name); err != nil {
			return err
		}
	}
	ch := make(chan *nats.Msg, 1024)
	sub, err := c.nc.ChanSubscribe(c.subj.Events(name), ch)
	if err != nil {
		return c.watchFailed("subscribe to events", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.Flush(); err != nil {
		return c.watchFailed("flush the events subscription", err)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.gone:
			return fmt.Errorf("%w: the NATS connection or the client was closed while watching", ErrClosed)
		case m := <-ch:
			var ev Event
			if _, err := messages.Decode(m.Data, &ev); err == nil {
				fn(ev)
			}
		}
	}
}

// watchFailed is Watch's error when what failed with err: ErrClosed when the
// connection is closed (the client cannot watch again), else ErrUnavailable.
func (c *Client) watchFailed(what string, err error) error {
	if c.nc.IsClosed() {
		return fmt.Errorf("%w: the NATS connection was closed: %s: %v", ErrClosed, what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}
