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

// sharedInboxPrefix is nats.go's default inbox prefix, which every client
// without a prefix of its own shares.
const sharedInboxPrefix = "_INBOX"

// quotaOf is the unit the queue bounds count for an acquisition: the
// requester's inbox namespace (the inbox prefix of its reply subject) when
// it has one of its own, as each user has under the permission recipe of
// PROTOCOL.md §3.3, where permissions keep it from naming another's; under
// the shared "_INBOX" prefix, where the broker cannot tell users apart, the
// client inbox of its notify subject.
func quotaOf(reply, notify string) string {
	if p := messages.InboxPrefix(reply); p != "" && p != sharedInboxPrefix {
		return p
	}
	return inboxOf(notify)
}

// waiterRoom tells whether one more waiter may queue for quota: the quota
// and the broker each have a bound.
func (s *state) waiterRoom(quota string) *messages.Error {
	if s.maxWaiters > 0 && len(s.waiters) >= s.maxWaiters {
		return messages.Errorf(messages.CodeTooManyWaiters, "the broker has %d acquisitions queued, its maximum: retry later or raise --max-waiters", len(s.waiters))
	}
	if in := s.inboxes[quota]; in != nil && s.maxPerInbox > 0 && in.waiters >= s.maxPerInbox {
		return messages.Errorf(messages.CodeTooManyWaiters, "inbox %q has %d acquisitions queued, the maximum per inbox: wait for some to be granted, or raise --max-waiters-per-inbox", quota, in.waiters)
	}
	return nil
}

// addWaiter records w as queued (or admitted and not yet accepted).
func (s *state) addWaiter(w *waiter) {
	s.waiters[w.id] = w
	key := w.quotaKey()
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
	key := w.quotaKey()
	if in := s.inboxes[key]; in != nil {
		if in.waiters--; in.waiters <= 0 {
			delete(s.inboxes, key)
		}
	}
}

// quotaKey is the waiter's quota (its notify inbox for a waiter stored
// before quotas were kept).
func (w *waiter) quotaKey() string {
	if w.quota != "" {
		return w.quota
	}
	return inboxOf(w.notify)
}

// grantAnswered records that w's quota answered a grant.
func (s *state) grantAnswered(w *waiter) {
	if in := s.inboxes[w.quotaKey()]; in != nil {
		in.strikes = 0
	}
}

// grantUnanswered records that a grant to w went unanswered for the grant
// timeout; after maxStrikes in a row the other waiters of its quota fail.
// It returns how many were dropped.
func (s *state) grantUnanswered(now time.Time, w *waiter, fx *effects) int {
	key := w.quotaKey()
	in := s.inboxes[key]
	if in == nil {
		return 0
	}
	if in.strikes++; in.strikes < maxStrikes {
		return 0
	}
	var drop []*waiter
	for _, o := range s.waiters {
		if !o.granted && o.quotaKey() == key {
			drop = append(drop, o)
		}
	}
	e := messages.Errorf(messages.CodeUnavailable, "dropped from the queue: %d grants in a row to inbox %q went unanswered within the grant timeout; acquire again", in.strikes, key)
	for _, w := range drop {
		s.failWaiter(now, w, e, fx)
	}
	return len(drop)
}
