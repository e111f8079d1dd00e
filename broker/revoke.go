package broker

import (
	"fmt"
	"sort"
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

// revokeOn revokes lease r.LeaseID through the subject of limit name.
func (s *state) revokeOn(now time.Time, name string, r *messages.RevokeRequest, fx *effects) messages.RevokeReply {
	l := s.leases[r.LeaseID]
	if l == nil {
		return messages.RevokeReply{}
	}
	if !inScope(l.leaseScope(), name) {
		return messages.RevokeReply{Error: outOfScope("lease", r.LeaseID, name, l.leaseScope())}
	}
	s.revokeLease(now, l, r.Reason, r.By, fx)
	return messages.RevokeReply{Revoked: true}
}

// revokeLease drops lease l like a release, with revoked events carrying
// reason and by; its id is remembered so that its holder's next renewal
// learns why, and a RevokedNotice is pushed to its holder (once the change
// is persisted) so that it stops at once.
func (s *state) revokeLease(now time.Time, l *lease, reason, by string, fx *effects) {
	from := len(fx.events)
	s.dropLease(now, l, messages.EventRevoked, fx)
	for i := from; i < len(fx.events); i++ {
		if fx.events[i].Kind == messages.EventRevoked && fx.events[i].LeaseID == l.id {
			fx.events[i].Reason, fx.events[i].By = reason, by
		}
	}
	s.revoked.remember(now, l.id, 1)
	if l.notify != "" {
		fx.notices = append(fx.notices, revokeNotice{notify: l.notify, enc: l.enc,
			msg: messages.RevokedNotice{Revoked: l.id, Key: l.key, Reason: reason, By: by}})
	}
}

// revokeNotice is a RevokedNotice to push to a revoked lease's notify
// subject, in the encoding of its acquisition.
type revokeNotice struct {
	notify string
	enc    messages.Encoding
	msg    messages.RevokedNotice
}

// revokeExcess is update's revocation: with req.Revoke, the leases over
// ls's new limit are revoked (revokeNewest) on behalf of req.By.
func (s *state) revokeExcess(now time.Time, ls *limitState, req *messages.UpdateRequest, fx *effects) []string {
	if !req.Revoke {
		return nil
	}
	return s.revokeNewest(now, ls, req.By, fx)
}

// revokeNewest revokes ls's newest leases (the highest tokens first) until
// the slots they hold fit its limit, for an update with revoke that lowered
// it, and returns their ids in that order. Undecayed rate slots are not
// leases: they drain by themselves and are left alone. While held exceeds
// the limit no queued acquisition fits it, so nothing is granted on ls
// before the excess is gone.
func (s *state) revokeNewest(now time.Time, ls *limitState, by string, fx *effects) []string {
	if ls.held <= ls.cfg.Limit {
		return nil
	}
	newest := make([]*lease, 0, len(ls.leases))
	for _, l := range ls.leases {
		newest = append(newest, l)
	}
	sort.Slice(newest, func(i, j int) bool { return newest[i].token > newest[j].token })
	reason := fmt.Sprintf("limit lowered to %d", ls.cfg.Limit)
	var ids []string
	for _, l := range newest {
		if ls.held <= ls.cfg.Limit {
			break
		}
		s.revokeLease(now, l, reason, by, fx)
		ids = append(ids, l.id)
	}
	return ids
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
