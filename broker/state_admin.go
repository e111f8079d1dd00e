package broker

import (
	"math"
	"sort"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

func validateConfig(limit int, decay float64) *messages.Error {
	if limit < 0 {
		return messages.Errorf(messages.CodeInvalidArgument, "limit is %d: give 0 or more slots", limit)
	}
	if decay < 0 || math.IsNaN(decay) || math.IsInf(decay, 0) {
		return messages.Errorf(messages.CodeInvalidArgument, "slot_decay_per_second is %v: give a finite number >= 0 (0 for no decay)", decay)
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
		Active: active, CreatedAt: now, UpdatedAt: now})
	s.limits[name] = ls
	fx.dirty = append(fx.dirty, name)
	cfg := ls.cfg
	fx.events = append(fx.events, messages.Event{Kind: messages.EventCreated, Limit: name, Available: ls.free(now), Config: &cfg, At: now})
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info}
}

func (s *state) notFound(name string) *messages.Error {
	if e := messages.ValidateName(name); e != nil {
		return e
	}
	return messages.Errorf(messages.CodeNotFound, "limit %q does not exist: create it first (slotctl ls shows the names)", name)
}

// update changes a limit's settings; raising the limit grants waiters at once.
func (s *state) update(now time.Time, name string, req *messages.UpdateRequest, fx *effects) messages.LimitReply {
	ls := s.limits[name]
	if ls == nil {
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
	if !ls.cfg.Active {
		s.unenforce(now, ls, fx)
	}
	s.failTooLarge(now, ls, fx)
	s.dispatch(now, fx, name)
	s.announceAvailable(now, fx, name)
	cfg := ls.cfg
	fx.events = append(fx.events, messages.Event{Kind: messages.EventChanged, Limit: name, Available: ls.free(now), Config: &cfg, At: now})
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info}
}

// unenforce takes an inactive limit out of its waiters: they no longer wait for it.
func (s *state) unenforce(now time.Time, ls *limitState, fx *effects) {
	var others []string
	for e := ls.queue.Front(); e != nil; e = e.Next() {
		w := e.Value.(*waiter)
		w.forget(ls.cfg.Name)
		fx.put(waiterKey(w.id), w.record())
		others = append(others, w.names...)
		if len(w.names) == 0 {
			s.grantWaiter(now, w, fx)
		}
	}
	ls.queue.Init()
	s.dispatch(now, fx, others...)
}

// failTooLarge fails the waiters that ask for more than a lowered limit allows.
func (s *state) failTooLarge(now time.Time, ls *limitState, fx *effects) {
	// Collect first: failing one dispatches, which can dequeue the next elements.
	var tooLarge []*waiter
	for e := ls.queue.Front(); e != nil; e = e.Next() {
		if w := e.Value.(*waiter); w.occupy > ls.cfg.Limit {
			tooLarge = append(tooLarge, w)
		}
	}
	for _, w := range tooLarge {
		s.failWaiter(now, w, messages.Errorf(messages.CodeInvalidOccupy,
			"limit %q was lowered to %d slots, fewer than the %d requested", ls.cfg.Name, ls.cfg.Limit, w.occupy), fx)
	}
}

// failWaiter takes w out of its queues and tells it why.
func (s *state) failWaiter(now time.Time, w *waiter, err *messages.Error, fx *effects) {
	s.unqueue(w)
	delete(s.waiters, w.id)
	fx.purge(waiterKey(w.id))
	fx.fails = append(fx.fails, failedWait{w: w, err: err})
	s.dispatch(now, fx, w.names...)
}

// remove deletes a limit: its waiters fail with not_found, its leases are voided.
func (s *state) remove(now time.Time, name string, fx *effects) messages.LimitReply {
	ls := s.limits[name]
	if ls == nil {
		return messages.LimitReply{Error: s.notFound(name)}
	}
	info := s.info(now, ls)
	delete(s.limits, name)
	fx.purge(limitKey(name))
	gone := messages.Errorf(messages.CodeNotFound, "limit %q was deleted while waiting", name)
	for e := ls.queue.Front(); e != nil; e = e.Next() {
		// The limit is gone from s.limits, so failWaiter leaves this queue alone.
		s.failWaiter(now, e.Value.(*waiter), gone, fx)
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
	return messages.LimitReply{Limit: &info}
}

// get returns one limit's info.
func (s *state) get(now time.Time, name string) messages.LimitReply {
	ls := s.limits[name]
	if ls == nil {
		return messages.LimitReply{Error: s.notFound(name)}
	}
	info := s.info(now, ls)
	return messages.LimitReply{Limit: &info}
}

// list returns every limit, sorted by name.
func (s *state) list(now time.Time) messages.ListReply {
	out := make([]messages.LimitInfo, 0, len(s.limits))
	for _, ls := range s.limits {
		out = append(out, s.info(now, ls))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return messages.ListReply{Limits: out}
}

func (s *state) info(now time.Time, ls *limitState) messages.LimitInfo {
	info := messages.LimitInfo{Limit: ls.cfg, ActiveSlots: ls.activeSlots(now), DeniedSlots: ls.denied,
		NextSlotInMillis: ceilMillis(ls.nextSlotIn(now)), Holders: []messages.Holder{}, Waiters: []messages.Waiter{}}
	for _, l := range ls.leases {
		info.Holders = append(info.Holders, messages.Holder{LeaseID: l.id, Occupy: l.occupy, Holder: l.holder, Token: l.token,
			Names: l.names, AcquiredAt: l.acquired, ExpiresAt: l.expires})
	}
	sort.Slice(info.Holders, func(i, j int) bool { return info.Holders[i].Token < info.Holders[j].Token })
	pos := 1
	for e := ls.queue.Front(); e != nil; e = e.Next() {
		w := e.Value.(*waiter)
		info.Waiters = append(info.Waiters, messages.Waiter{Position: pos, WaitID: w.id, Occupy: w.occupy, Holder: w.holder,
			Names: w.names, Since: w.since})
		pos++
	}
	return info
}

// ceilMillis rounds d up to whole milliseconds: a wait shown as 0 would read as "free now".
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
