package broker

import (
	"math"
	"sort"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// maxDecay is the largest slot_decay_per_second: a slot then decays in a
// microsecond, beyond any rate a broker can serve; a faster one would decay
// in under a nanosecond, which time cannot hold, and admit without bound.
const maxDecay = 1e6

// validateConfig checks a limit's numbers, so that every duration computed
// from them fits time.Duration: a full bucket drains within MaxDrain.
func validateConfig(limit int, decay float64) *messages.Error {
	if limit < 0 || limit > messages.MaxLimit {
		return messages.Errorf(messages.CodeInvalidArgument, "limit is %d: give 0 to %d slots", limit, messages.MaxLimit)
	}
	if decay < 0 || math.IsNaN(decay) || math.IsInf(decay, 0) || decay > maxDecay {
		return messages.Errorf(messages.CodeInvalidArgument, "slot_decay_per_second is %v: give a finite number from 0 (no decay) to %g", decay, float64(maxDecay))
	}
	if decay > 0 && float64(limit)/decay > messages.MaxDrain.Seconds() {
		return messages.Errorf(messages.CodeInvalidArgument, "slot_decay_per_second %g is too slow for a limit of %d: a full bucket would take longer than %v to drain; give at least %g",
			decay, limit, messages.MaxDrain, float64(limit)/messages.MaxDrain.Seconds())
	}
	return nil
}

// create adds a limit.
func (s *state) create(now time.Time, name string, req *messages.CreateRequest, fx *effects) messages.LimitReply {
	if e := messages.ValidateName(name); e != nil {
		return messages.LimitReply{Error: e}
	}
	if s.limits[name] != nil {
		return messages.LimitReply{Error: messages.Errorf(messages.CodeExists, "limit %q already exists: update it, or delete it first", name)}
	}
	if e := validateConfig(req.Limit, req.SlotDecayPerSecond); e != nil {
		return messages.LimitReply{Error: e}
	}
	active := req.Active == nil || *req.Active
	ls := newLimitState(messages.Limit{Name: name, Limit: req.Limit, SlotDecayPerSecond: req.SlotDecayPerSecond,
		Active: active, PerKey: req.PerKey, CreatedAt: now, UpdatedAt: now})
	s.limits[name] = ls
	fx.dirty = append(fx.dirty, name)
	cfg := ls.cfg
	fx.events = append(fx.events, messages.Event{Kind: messages.EventCreated, Limit: name, Available: ls.free(now), Config: &cfg, At: now})
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info}
}

func (s *state) notFound(name string) *messages.Error {
	if e := messages.ValidateRef(name); e != nil {
		return e
	}
	return messages.Errorf(messages.CodeNotFound, "limit %q does not exist: create it first (slotctl ls shows the names)", name)
}

// update changes a limit's settings; raising the limit grants waiters at once.
func (s *state) update(now time.Time, name string, req *messages.UpdateRequest, fx *effects) messages.LimitReply {
	ls := s.limits[name]
	if ls == nil || ls.isKey() {
		return messages.LimitReply{Error: s.notFound(name)}
	}
	if req.Limit == nil && req.SlotDecayPerSecond == nil && req.Active == nil {
		return messages.LimitReply{Error: messages.Errorf(messages.CodeInvalidArgument, "nothing to update: give limit, slot_decay_per_second or active")}
	}
	limit, decay := ls.cfg.Limit, ls.cfg.SlotDecayPerSecond
	if req.Limit != nil {
		limit = *req.Limit
	}
	if req.SlotDecayPerSecond != nil {
		decay = *req.SlotDecayPerSecond
	}
	if e := validateConfig(limit, decay); e != nil {
		return messages.LimitReply{Error: e}
	}
	ls.bucket.rescale(now, ls.cfg.SlotDecayPerSecond, decay)
	ls.cfg.Limit, ls.cfg.SlotDecayPerSecond = limit, decay
	if req.Active != nil {
		ls.cfg.Active = *req.Active
	}
	ls.cfg.UpdatedAt = now
	fx.dirty = append(fx.dirty, name)
	// The change's event comes before those of the grants it allows.
	cfg := ls.cfg
	fx.events = append(fx.events, messages.Event{Kind: messages.EventChanged, Limit: name, Available: ls.free(now), Config: &cfg, At: now})
	revoked := s.revokeExcess(now, ls, req, fx) // revoke.go: only with req.Revoke
	if ls.cfg.PerKey {
		for _, n := range s.updateKeys(now, ls, fx) {
			if k := s.limits[n]; k != nil {
				revoked = append(revoked, s.revokeExcess(now, k, req, fx)...)
			}
		}
	}
	if !ls.cfg.Active {
		s.unenforce(now, ls, fx)
	}
	s.failTooLarge(now, ls, fx)
	s.dispatch(now, fx, name)
	s.announceAvailable(now, fx, name)
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info, Revoked: revoked}
}

// unenforce takes an inactive limit out of its waiters: they no longer wait for it.
func (s *state) unenforce(now time.Time, ls *limitState, fx *effects) {
	var others []string
	for _, w := range ls.queue.all() {
		w.forget(ls.cfg.Name)
		fx.put(waiterKey(w.id), w.record())
		others = append(others, w.names...)
		if len(w.names) == 0 {
			s.grantWaiter(now, w, fx)
		}
	}
	ls.queue.clear()
	s.dispatch(now, fx, others...)
}

// failTooLarge fails the waiters that ask for more than a lowered limit allows.
func (s *state) failTooLarge(now time.Time, ls *limitState, fx *effects) {
	// Collect first: failing one dispatches, which can dequeue the next elements.
	var tooLarge []*waiter
	ls.queue.each(func(w *waiter) bool {
		if w.occupy > ls.cfg.Limit {
			tooLarge = append(tooLarge, w)
		}
		return true
	})
	for _, w := range tooLarge {
		s.failWaiter(now, w, messages.Errorf(messages.CodeInvalidOccupy,
			"limit %s was lowered to %d slots, fewer than the %d requested", limitRef(ls.cfg.Name), ls.cfg.Limit, w.occupy), fx)
	}
}

// failWaiter takes w out of its queues and tells it why.
func (s *state) failWaiter(now time.Time, w *waiter, err *messages.Error, fx *effects) {
	s.unqueue(w)
	s.removeWaiter(w)
	fx.purge(waiterKey(w.id))
	fx.fails = append(fx.fails, failedWait{w: w, err: err})
	s.dispatch(now, fx, w.names...)
}

// remove deletes a limit: its waiters fail with not_found, its leases are voided.
func (s *state) remove(now time.Time, name string, fx *effects) messages.LimitReply {
	ls := s.limits[name]
	if ls == nil || ls.isKey() {
		return messages.LimitReply{Error: s.notFound(name)}
	}
	info := s.info(now, ls)
	s.removeKeys(now, ls, fx)
	s.removeLimit(now, ls, fx)
	fx.purge(limitKey(name))
	fx.wake = append(fx.wake, name) // its timer stops
	return messages.LimitReply{Limit: &info}
}

// removeLimit deletes limit ls from the state: its waiters fail with
// not_found, its leases are voided.
func (s *state) removeLimit(now time.Time, ls *limitState, fx *effects) {
	name := ls.cfg.Name
	delete(s.limits, name)
	gone := messages.Errorf(messages.CodeNotFound, "limit %s was deleted while waiting", limitRef(name))
	for _, w := range ls.queue.all() {
		// The limit is gone from s.limits, so failWaiter leaves this queue alone.
		s.failWaiter(now, w, gone, fx)
	}
	for _, l := range ls.leases {
		s.dropLease(now, l, messages.EventReleased, fx)
	}
	// An admitted rate waiter not yet answered must not, if it declines,
	// take its slots out of a new limit of the same name.
	for _, w := range s.waiters {
		if w.granted {
			w.forget(name)
		}
	}
	fx.events = append(fx.events, messages.Event{Kind: messages.EventDeleted, Limit: name, At: now})
}

// get returns one limit's info.
func (s *state) get(now time.Time, name string) messages.LimitReply {
	if e := messages.ValidateRef(name); e != nil {
		return messages.LimitReply{Error: e}
	}
	ls := s.limits[name]
	if ls == nil {
		fam, _, keyed := messages.SplitKeyed(name)
		f := s.limits[fam]
		switch {
		case keyed && f != nil && f.cfg.PerKey:
			// An idle key: a fresh limit with the family's configuration.
			ls = newLimitState(f.cfg)
			ls.cfg.Name, ls.family = name, f
		case keyed && f != nil:
			return messages.LimitReply{Error: messages.Errorf(messages.CodeInvalidArgument, "limit %q is not per-key: it has no keys", fam)}
		default:
			return messages.LimitReply{Error: s.notFound(name)}
		}
	}
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info}
}

// listAfter returns the limits named after after, sorted by name, each
// with at most max holders and waiters listed.
func (s *state) listAfter(now time.Time, after string, max int) []messages.LimitInfo {
	names := make([]string, 0, len(s.limits))
	for n, ls := range s.limits {
		if n > after && !ls.isKey() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]messages.LimitInfo, 0, len(names))
	for _, n := range names {
		out = append(out, s.infoN(now, s.limits[n], max))
	}
	return out
}

// listedInReplies is how many holders and waiters the replies of create,
// update, delete and get list at most (get lists fewer when they would not
// fit the server's max payload); HoldersTotal and WaitersTotal count all.
const listedInReplies = 1000

// info is the limit's info with up to listedInReplies holders and waiters.
func (s *state) info(now time.Time, ls *limitState) messages.LimitInfo {
	return s.infoN(now, ls, listedInReplies)
}

// infoN is the limit's info with up to max holders (the oldest tokens
// first) and max waiters (by position).
func (s *state) infoN(now time.Time, ls *limitState, max int) messages.LimitInfo {
	info := messages.LimitInfo{Limit: ls.cfg, ActiveSlots: ls.activeSlots(now), DeniedSlots: ls.denied,
		NextSlotInMillis: ceilMillis(ls.nextSlotIn(now)), Holders: []messages.Holder{}, Waiters: []messages.Waiter{},
		HoldersTotal: len(ls.leases), WaitersTotal: ls.queue.Len()}
	if ls.isKey() {
		info.Limit.Name, info.Key, _ = messages.SplitKeyed(ls.cfg.Name)
	}
	if ls.cfg.PerKey && !ls.isKey() {
		info.Keys, info.KeysTotal = s.keyInfos(now, ls, max)
		// A family holds nothing itself: its totals are its keys'.
		for _, k := range ls.keys {
			info.ActiveSlots += k.activeSlots(now)
			info.HoldersTotal += len(k.leases)
			info.WaitersTotal += k.queue.Len()
		}
	}
	for _, l := range ls.leases {
		info.Holders = append(info.Holders, messages.Holder{LeaseID: l.id, Occupy: l.occupy, Holder: l.holder, Token: l.token,
			Names: l.names, AcquiredAt: l.acquired, ExpiresAt: l.expires})
	}
	sort.Slice(info.Holders, func(i, j int) bool { return info.Holders[i].Token < info.Holders[j].Token })
	if len(info.Holders) > max {
		info.Holders = info.Holders[:max]
	}
	pos, est := 1, s.sim(now, ls) // estimates on this limit (estimate.go)
	defer s.simDone(est)
	ls.queue.inOrder(now, s.aging, func(w *waiter) bool {
		if pos > max {
			return false
		}
		info.Waiters = append(info.Waiters, messages.Waiter{Position: pos, WaitID: w.id, Occupy: w.occupy, Holder: w.holder,
			Names: w.names, Since: w.since, Priority: w.priority, EffectivePriority: effective(w, now, s.aging),
			Estimate: est.next(w)})
		pos++
		return true
	})
	return info
}

// ceilMillis rounds d up to whole milliseconds: a wait shown as 0 would read as "free now".
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
