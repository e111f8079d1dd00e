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

// PerKey creates a per-key limit: a family whose every key (WithKey) has
// the limit's slots to itself, created on first use, dropped when idle.
// Updating the family applies to every key.
func PerKey() LimitOption { return func(r *messages.CreateRequest) { r.PerKey = true } }

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

// GetKey returns one key of the per-key limit name: its holders and
// waiters, with the family's configuration (LimitInfo.Key is set). A key
// that is idle has none. A missing limit is ErrNotFound, one that is not
// per-key ErrInvalidArgument.
func (c *Client) GetKey(ctx context.Context, name, key string) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if e := messages.ValidateKey(key); e != nil {
		return nil, fromWire(e)
	}
	return c.limitCall(ctx, messages.VerbGet, messages.KeyedName(name, key), struct{}{})
}

// UpdateOption configures UpdateLimit.
type UpdateOption func(*updateOptions)

type updateOptions struct {
	revoke  bool
	by      string
	revoked *[]string
}

// RevokeExcess makes a lowered limit hold at once instead of as its leases
// end: the broker revokes the limit's newest leases (the highest fencing
// tokens first) until the slots they hold fit the new limit, each as
// RevokeLease would (a revoked event with the reason "limit lowered to N"
// and by, the revoker's description, at most messages.MaxHolderLen bytes of
// printable text; a Go holder's Lease ends at once with ErrLeaseRevoked).
// Waiters are granted only the slots within the new limit. The ids of the
// leases revoked, newest first, are stored in *revoked unless revoked is nil
// (none when the limit was not lowered below the slots held).
func RevokeExcess(by string, revoked *[]string) UpdateOption {
	return func(o *updateOptions) { o.revoke, o.by, o.revoked = true, by, revoked }
}

// UpdateLimit changes the set fields of u. Raising the limit grants waiters
// at once; lowering it revokes nothing (the leases over it run on until they
// end) unless RevokeExcess is given. It fails with ErrNotFound, or
// ErrInvalidArgument when u sets nothing.
func (c *Client) UpdateLimit(ctx context.Context, name string, u LimitUpdate, opts ...UpdateOption) (*LimitInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var o updateOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.revoke {
		u.Revoke, u.By = true, o.by
	}
	if e := messages.CheckText("by", u.By, messages.MaxHolderLen); e != nil {
		return nil, fromWire(e)
	}
	reply, err := c.limitReply(ctx, messages.VerbUpdate, name, &u)
	if err != nil {
		return nil, err
	}
	if o.revoked != nil {
		*o.revoked = reply.Revoked
	}
	return reply.Limit, nil
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
	reply, err := c.limitReply(ctx, verb, name, req)
	if err != nil {
		return nil, err
	}
	return reply.Limit, nil
}

// limitReply sends an admin verb and returns its reply, which has a limit.
func (c *Client) limitReply(ctx context.Context, verb, name string, req any) (*messages.LimitReply, error) {
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
	return &reply, nil
}
