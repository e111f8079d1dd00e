package client

import (
	"context"
	"fmt"

	"github.com/slotbroker/slotbroker/messages"
)

// ErrLeaseRevoked: the lease was revoked (RevokeLease, slotctl revoke). It
// also matches ErrLeaseLost: code that handles a lost lease handles a
// revoked one.
var ErrLeaseRevoked = fmt.Errorf("%w: revoked", ErrLeaseLost)

// RevokeOption configures RevokeLease.
type RevokeOption func(*messages.RevokeRequest)

// RevokedBy describes who revokes, as shown in the revoked event: at most
// messages.MaxHolderLen bytes of printable text.
func RevokedBy(desc string) RevokeOption { return func(r *messages.RevokeRequest) { r.By = desc } }

// RevokeLease ends lease leaseID on limit (the first limit the lease holds
// slots on) whoever holds it: its slots are freed, a revoked event carries
// reason, and its holder is told at once: the broker pushes it a notice, on
// which a Go client's Lease ends (Done closes, Err matches ErrLeaseRevoked);
// a holder that misses the notice learns at its next renewal. It reports
// false, without error, when the lease is not held (already released, expired or revoked).
// A lease of another limit is ErrPermissionDenied. The lease of one key of
// a per-key limit is revoked on "<name>.<key>" (messages.KeyedName), the
// first of its lease's Names.
func (c *Client) RevokeLease(ctx context.Context, limit, leaseID string, reason string, opts ...RevokeOption) (bool, error) {
	if e := messages.ValidateRef(limit); e != nil {
		return false, fromWire(e)
	}
	req := messages.RevokeRequest{LeaseID: leaseID, Reason: reason}
	for _, o := range opts {
		o(&req)
	}
	if e := messages.CheckText("reason", req.Reason, messages.MaxReasonLen); e != nil {
		return false, fromWire(e)
	}
	if e := messages.CheckText("by", req.By, messages.MaxHolderLen); e != nil {
		return false, fromWire(e)
	}
	var reply messages.RevokeReply
	if err := c.call(ctx, c.subj.Verb(messages.VerbRevoke, limit), &req, &reply, true); err != nil {
		return false, err
	}
	if err := fromWire(reply.Error); err != nil {
		return false, err
	}
	return reply.Revoked, nil
}

// onRevoked ends the held lease a RevokedNotice names, once the notice is
// known to come from the broker: it carries the key the lease's
// acquisition sent. Any other notice (a lease this Client does not hold, a
// wrong key: somebody else publishes to this Client's inbox) is dropped.
func (c *Client) onRevoked(n messages.RevokedNotice) {
	var held *Lease
	c.mu.Lock()
	for l := range c.leases {
		if l.grant.ID == n.Revoked {
			held = l
			break
		}
	}
	if held == nil && c.inflightKeys[n.Key] > 0 {
		// The notice can overtake the lease: it is pushed once the
		// revocation is stored, maybe before the acquire's reply arrives.
		// Only one with the key of an acquisition in flight is kept:
		// forged ones (nobody knows the keys) cannot push it out.
		c.early.add(n)
	}
	c.mu.Unlock()
	if held == nil || held.key == "" || !sameKey(held.key, n.Key) {
		return
	}
	held.end(revokedError(n))
}

// expectNotices notes key as the key of an acquisition in flight, whose
// lease's revocation notice may arrive before the lease.
func (c *Client) expectNotices(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflightKeys == nil {
		c.inflightKeys = map[string]int{}
	}
	c.inflightKeys[key]++
}

// forgetNotices ends expectNotices for key.
func (c *Client) forgetNotices(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflightKeys[key]--; c.inflightKeys[key] <= 0 {
		delete(c.inflightKeys, key)
	}
}

// maxEarlyNotices is how many notices of leases not held yet a client
// keeps: a notice overtakes its lease by a round trip at most, and
// anybody who may publish to the inbox must not make it grow.
const maxEarlyNotices = 64

// maxEarlyPerLease is how many early notices of one lease id are kept: a
// forged one (wrong key) must not push the broker's out.
const maxEarlyPerLease = 4

// earlyNotices are the revocation notices for leases the client did not
// hold when they arrived, of the last maxEarlyNotices lease ids.
type earlyNotices struct {
	byLease map[string][]messages.RevokedNotice
	order   []string
}

func (e *earlyNotices) add(n messages.RevokedNotice) {
	if e.byLease == nil {
		e.byLease = map[string][]messages.RevokedNotice{}
	}
	kept, ok := e.byLease[n.Revoked]
	if !ok {
		if len(e.order) >= maxEarlyNotices {
			delete(e.byLease, e.order[0])
			e.order = e.order[1:]
		}
		e.order = append(e.order, n.Revoked)
	}
	if len(kept) < maxEarlyPerLease {
		e.byLease[n.Revoked] = append(kept, n)
	}
}

// take returns and forgets the notice kept for lease id whose key is key,
// if any.
func (e *earlyNotices) take(id, key string) (messages.RevokedNotice, bool) {
	kept, ok := e.byLease[id]
	var n messages.RevokedNotice
	found := false
	for _, k := range kept {
		if key != "" && sameKey(key, k.Key) {
			n, found = k, true
			break
		}
	}
	if ok {
		delete(e.byLease, id)
		for i, o := range e.order {
			if o == id {
				e.order = append(e.order[:i:i], e.order[i+1:]...)
				break
			}
		}
	}
	return n, found
}

// revokedError is a revoked lease's error: ErrLeaseRevoked with the lease,
// who revoked it and why.
func revokedError(n messages.RevokedNotice) error {
	by := ""
	if n.By != "" {
		by = fmt.Sprintf(" by %q", n.By)
	}
	reason := ""
	if n.Reason != "" {
		reason = ": " + n.Reason
	}
	return fmt.Errorf("%w: lease %s%s%s", ErrLeaseRevoked, n.Revoked, by, reason)
}
