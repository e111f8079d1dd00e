package broker

import (
	"strings"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// maxStrikes is how many grants in a row an inbox may leave unanswered
// (the grant timeout passing each time) before its other waiters are
// dropped: each unanswered grant holds the queue behind it for a grant
// timeout, so an inbox that stopped answering would otherwise stall
// everybody queued after its waiters.
const maxStrikes = 2

// inboxState counts what one inbox has queued and how many of its grants
// in a row went unanswered.
type inboxState struct {
	waiters int
	strikes int
}

// inboxOf is the inbox of a notify subject: the subject without its last
// token (for the Go client, one Client).
func inboxOf(notify string) string {
	if i := strings.LastIndexByte(notify, '.'); i > 0 {
		return notify[:i]
	}
	return notify
}

// waiterRoom tells whether one more waiter may queue for notify: the inbox
// and the broker each have a bound.
func (s *state) waiterRoom(notify string) *messages.Error {
	if s.maxWaiters > 0 && len(s.waiters) >= s.maxWaiters {
		return messages.Errorf(messages.CodeTooManyWaiters, "the broker has %d acquisitions queued, its maximum: retry later or raise --max-waiters", len(s.waiters))
	}
	if in := s.inboxes[inboxOf(notify)]; in != nil && s.maxPerInbox > 0 && in.waiters >= s.maxPerInbox {
		return messages.Errorf(messages.CodeTooManyWaiters, "inbox %q has %d acquisitions queued, the maximum per inbox: wait for some to be granted, or raise --max-waiters-per-inbox", inboxOf(notify), in.waiters)
	}
	return nil
}

// addWaiter records w as queued (or admitted and not yet accepted).
func (s *state) addWaiter(w *waiter) {
	s.waiters[w.id] = w
	key := inboxOf(w.notify)
	in := s.inboxes[key]
	if in == nil {
		in = &inboxState{}
		s.inboxes[key] = in
	}
	in.waiters++
}

// removeWaiter forgets w; an inbox with nothing queued is forgotten too.
func (s *state) removeWaiter(w *waiter) {
	if s.waiters[w.id] != w {
		return
	}
	delete(s.waiters, w.id)
	key := inboxOf(w.notify)
	if in := s.inboxes[key]; in != nil {
		if in.waiters--; in.waiters <= 0 {
			delete(s.inboxes, key)
		}
	}
}

// grantAnswered records that notify's inbox answered a grant.
func (s *state) grantAnswered(notify string) {
	if in := s.inboxes[inboxOf(notify)]; in != nil {
		in.strikes = 0
	}
}

// grantUnanswered records that a grant to notify went unanswered for the
// grant timeout; after maxStrikes in a row the inbox's other waiters fail.
// It returns how many were dropped.
func (s *state) grantUnanswered(now time.Time, notify string, fx *effects) int {
	key := inboxOf(notify)
	in := s.inboxes[key]
	if in == nil {
		return 0
	}
	if in.strikes++; in.strikes < maxStrikes {
		return 0
	}
	var drop []*waiter
	for _, w := range s.waiters {
		if !w.granted && inboxOf(w.notify) == key {
			drop = append(drop, w)
		}
	}
	e := messages.Errorf(messages.CodeUnavailable, "dropped from the queue: %d grants in a row to inbox %q went unanswered within the grant timeout; acquire again", in.strikes, key)
	for _, w := range drop {
		s.failWaiter(now, w, e, fx)
	}
	return len(drop)
}
