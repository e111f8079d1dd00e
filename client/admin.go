package client

import (
	"context"
	"fmt"

	"github.com/slotbroker/slotbroker/messages"
)

// LimitInfo is a limit's configuration with its holders and waiters.
type LimitInfo = messages.LimitInfo

// LimitUpdate names the settings to change; nil fields are left as they are.
type LimitUpdate = messages.UpdateRequest

// LimitOption configures CreateLimit.
type LimitOption func(*messages.CreateRequest)

// WithSlotDecay makes the limit a rate limit whose slots decay at perSecond.
func WithSlotDecay(perSecond float64) LimitOption {
	return func(r *messages.CreateRequest) { r.SlotDecayPerSecond = perSecond }
}

// WithInactive creates the limit disabled: not enforced until enabled.
func WithInactive() LimitOption {
	return func(r *messages.CreateRequest) { f := false; r.Active = &f }
}

// Ptr returns a pointer to v, for LimitUpdate fields.
func Ptr[T any](v T) *T { return &v }

// CreateLimit creates a limit of slots slots. It fails with ErrExists when
// the name is taken, ErrInvalidName or ErrInvalidArgument for bad input.
func (c *Client) CreateLimit(ctx context.Context, name string, slots int, opts ...LimitOption) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	req := &messages.CreateRequest{Limit: slots}
	for _, o := range opts {
		o(req)
	}
	return c.limitCall(ctx, messages.VerbCreate, name, req)
}

// GetLimit returns a limit with its live state, or ErrNotFound.
func (c *Client) GetLimit(ctx context.Context, name string) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return c.limitCall(ctx, messages.VerbGet, name, struct{}{})
}

// UpdateLimit changes the set fields of u. Raising the limit grants waiters
// at once; lowering it revokes nothing. It fails with ErrNotFound, or
// ErrInvalidArgument when u sets nothing.
func (c *Client) UpdateLimit(ctx context.Context, name string, u LimitUpdate) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return c.limitCall(ctx, messages.VerbUpdate, name, &u)
}

// SetActive enables or disables a limit.
func (c *Client) SetActive(ctx context.Context, name string, active bool) (*LimitInfo, error) {
	return c.UpdateLimit(ctx, name, LimitUpdate{Active: &active})
}

// DeleteLimit deletes a limit: its waiters fail with ErrNotFound and its
// leases are voided (their holders see ErrLeaseLost). It returns the limit
// as it was.
func (c *Client) DeleteLimit(ctx context.Context, name string) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return c.limitCall(ctx, messages.VerbDelete, name, struct{}{})
}

// ListLimits returns every limit, sorted by name. The broker answers in
// pages that fit the NATS server's max payload; ListLimits asks for them
// all, one after the other, within ctx.
func (c *Client) ListLimits(ctx context.Context) ([]LimitInfo, error) {
	var all []LimitInfo
	after := ""
	for {
		var reply messages.ListReply
		if err := c.call(ctx, c.subj.List(), &messages.ListRequest{After: after}, &reply, false); err != nil {
			return nil, err
		}
		if err := fromWire(reply.Error); err != nil {
			return nil, err
		}
		all = append(all, reply.Limits...)
		if reply.Next == "" {
			return all, nil
		}
		// Names are sorted: each page's cursor is past the one before.
		if reply.Next <= after {
			return nil, fmt.Errorf("%w: the broker's list page after %q gave the cursor %q, which does not advance", ErrUnavailable, after, reply.Next)
		}
		after = reply.Next
	}
}

func (c *Client) limitCall(ctx context.Context, verb, name string, req any) (*LimitInfo, error) {
	var reply messages.LimitReply
	if err := c.call(ctx, c.subj.Verb(verb, name), req, &reply, false); err != nil {
		return nil, err
	}
	if err := fromWire(reply.Error); err != nil {
		return nil, err
	}
	if reply.Limit == nil {
		return nil, fmt.Errorf("%w: empty reply to %s", ErrUnavailable, verb)
	}
	return reply.Limit, nil
}
