package client

import (
	"context"

	"github.com/slotbroker/slotbroker/messages"
)

// RateLimit blocks until occupy slots of the rate limit name (and of every
// WithNames limit) are admitted. The slots are never released: they decay at
// the limit's slot_decay_per_second. Waiting callers queue FIFO at the broker
// and are woken by a pushed grant the moment enough has decayed. A limit
// without slot decay fails with ErrNotRateLimit; missing and inactive limits
// follow the same rules as Acquire.
func (c *Client) RateLimit(ctx context.Context, name string, occupy int, opts ...AcquireOption) error {
	return c.blockRate(ctx, name, occupy, opts)
}

// TryRateLimit is RateLimit that never waits: nil when admitted now,
// ErrNoSlots otherwise. Concurrent calls with the same arguments on one
// Client are coalesced: while one is at the broker, the others wait and then
// go together in one request, which the broker admits in order as far as
// slots allow.
func (c *Client) TryRateLimit(ctx context.Context, name string, occupy int, opts ...AcquireOption) error {
	return c.tryRate(ctx, name, occupy, opts)
}

func (c *Client) rate(ctx context.Context, name string, occupy int, try bool, opts []AcquireOption) error {
	o := collect(opts)
	name, err := validate(name, occupy, o)
	if err != nil {
		return err
	}
	req := &messages.AcquireRequest{Occupy: occupy, Holder: o.holder, Strict: o.strict, Try: try, Rate: true, Priority: o.priority}
	_, reply, err := c.request(ctx, name, req, o)
	if err != nil {
		return err
	}
	c.warnUnenforced(name, reply)
	return nil
}
