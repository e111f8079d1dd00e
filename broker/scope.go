package broker

import (
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// The verbs on a lease or a wait act only within the limit of their
// subject: NATS permissions on "<prefix>.v1.release.db" then confine a user
// to db's leases, whatever ids it learns.

// outOfScope is the error of a request on name that targets another limit's lease or wait.
func outOfScope(what, id, name string, scope []string) *messages.Error {
	first := "_"
	if len(scope) > 0 {
		first = scope[0]
	}
	return messages.Errorf(messages.CodeForbidden, "%s %q is not on limit %q: send requests on it to the subjects of its own limit (e.g. %q)", what, id, name, first)
}

// leaseScope is the limits a lease may be acted on through.
func (l *lease) leaseScope() []string {
	if len(l.scope) > 0 {
		return l.scope
	}
	return l.names
}

// releaseOn releases lease id through the subject of limit name.
func (s *state) releaseOn(now time.Time, name, id string, fx *effects) messages.ReleaseReply {
	if l := s.leases[id]; l != nil && !inScope(l.leaseScope(), name) {
		return messages.ReleaseReply{Error: outOfScope("lease", id, name, l.leaseScope())}
	}
	return s.release(now, id, fx)
}

// renewOn renews lease id through the subject of limit name.
func (s *state) renewOn(now time.Time, name, id string, ttlMillis int64, fx *effects) messages.RenewReply {
	if l := s.leases[id]; l != nil && !inScope(l.leaseScope(), name) {
		return messages.RenewReply{Error: outOfScope("lease", id, name, l.leaseScope())}
	}
	return s.renew(now, id, ttlMillis, fx)
}

// cancelOn cancels acquisition waitID through the subject of limit name.
func (s *state) cancelOn(now time.Time, name, waitID string, fx *effects) messages.CancelReply {
	if w := s.waiters[waitID]; w != nil && !inScope(w.waitScope(), name) {
		return messages.CancelReply{Error: outOfScope("wait", waitID, name, w.waitScope())}
	}
	if l := s.byWait[waitID]; l != nil && !inScope(l.leaseScope(), name) {
		return messages.CancelReply{Error: outOfScope("wait", waitID, name, l.leaseScope())}
	}
	return s.cancel(now, waitID, fx)
}

// waitScope is the limits a waiter may be cancelled through.
func (w *waiter) waitScope() []string {
	if len(w.scope) > 0 {
		return w.scope
	}
	return w.names
}
