package broker

import (
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// revokedTTL is how long a revoked lease's id is remembered: long enough
// for its holder's next renewal (at most a third of the longest TTL away)
// to be answered revoked rather than lease_not_found. Only the leading
// broker remembers: after a failover a renewal gets lease_not_found.
func revokedTTL(ttl ttlBounds) time.Duration {
	return max(ttl.max, cancelTombstoneTTL)
}

// handleRevoke answers as soon as the revocation is applied, like handleRelease.
func (b *Broker) handleRevoke(req *request, name string) func() {
	var r messages.RevokeRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	if e := checkRevoke(&r); e != nil {
		respond(req, enc, messages.RevokeReply{Error: e}, e)
		return nil
	}
	var reply messages.RevokeReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.revokeOn(now, name, &r, fx) })
	respond(req, enc, reply, reply.Error)
	return b.afterReply(bt)
}

// checkRevoke checks a RevokeRequest's fields against the bounds of §3.2.
func checkRevoke(r *messages.RevokeRequest) *messages.Error {
	if r.LeaseID == "" {
		return messages.Errorf(messages.CodeBadRequest, "lease_id is empty: give the id of the lease to revoke")
	}
	if e := validateID("lease_id", r.LeaseID); e != nil {
		return e
	}
	if e := messages.CheckText("reason", r.Reason, messages.MaxReasonLen); e != nil {
		return e
	}
	return messages.CheckText("by", r.By, messages.MaxHolderLen)
}

// revokeOn revokes lease r.LeaseID through the subject of limit name: it is
// dropped like a release, with revoked events carrying the reason, and its
// id is remembered so that its holder's next renewal learns why.
func (s *state) revokeOn(now time.Time, name string, r *messages.RevokeRequest, fx *effects) messages.RevokeReply {
	l := s.leases[r.LeaseID]
	if l == nil {
		return messages.RevokeReply{}
	}
	if !inScope(l.leaseScope(), name) {
		return messages.RevokeReply{Error: outOfScope("lease", r.LeaseID, name, l.leaseScope())}
	}
	from := len(fx.events)
	s.dropLease(now, l, messages.EventRevoked, fx)
	for i := from; i < len(fx.events); i++ {
		if fx.events[i].Kind == messages.EventRevoked && fx.events[i].LeaseID == l.id {
			fx.events[i].Reason, fx.events[i].By = r.Reason, r.By
		}
	}
	s.revoked.remember(now, l.id, 1)
	return messages.RevokeReply{Revoked: true}
}

// revokedError is the renewal error for lease id when it was revoked
// within revokedTTL, else nil.
func (s *state) revokedError(now time.Time, id string) *messages.Error {
	if s.revoked == nil {
		return nil
	}
	s.revoked.rotate(now)
	if _, ok := s.revoked.lookup(id); !ok {
		return nil
	}
	return messages.Errorf(messages.CodeRevoked, "lease %q was revoked: its slots were freed", id)
}
