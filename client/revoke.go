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
// reason, and its holder learns at its next renewal that its lease was
// revoked (Lease.Err matches ErrLeaseRevoked). It reports false, without
// error, when the lease is not held (already released, expired or revoked).
// A lease of another limit is ErrPermissionDenied.
func (c *Client) RevokeLease(ctx context.Context, limit, leaseID string, reason string, opts ...RevokeOption) (bool, error) {
	if err := checkName(limit); err != nil {
		return false, err
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
