package broker

import (
	"slices"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Wait estimates (PROTOCOL.md §7.6). A queued acquisition is told how long
// it should still wait: on a rate limit from the bucket's arithmetic, on
// other limits from the limit's recent hold times, by playing its queue
// forward from now. Estimates are computed when they are asked for (a
// queued reply, inspect); nothing is kept per waiter.

// holdWindow is how many recent holds a limit's mean hold time follows:
// until then it is their plain mean, after that each new hold moves it by
// 1/holdWindow of the difference (an exponentially weighted mean).
const holdWindow = 32

// maxEstimated is how many waiters of a queue get an estimate: one further
// back gets none, which bounds the work of an estimate (inspect lists as
// many waiters).
const maxEstimated = listedInReplies

// holdStats is a limit's recent hold times: a few words, kept in memory
// only (a restarted broker knows none until holds end again).
type holdStats struct {
	mean time.Duration
	// n is the number of holds the mean rests on, at most holdWindow.
	n int
}

// add records a hold of d: the time from a lease's grant to its end.
func (h *holdStats) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if h.n < holdWindow {
		h.n++
	}
	h.mean += (d - h.mean) / time.Duration(h.n)
}

// slotRelease is n slots expected to be freed at a time.
type slotRelease struct {
	at time.Time
	n  int
}

// waitSim plays one limit's queue forward from now, one waiter at a time
// in service order (next), to tell when each is granted. Held leases (and
// the leases of the waiters it grants) are expected to end the limit's
// mean hold time after their grant (now, for those held longer already);
// a waiter is granted when its slots fit, the decay of a rate limit
// included (the bucket's own arithmetic). With no lease involved, on a
// rate limit, that is exact: basis EstimateRate. Otherwise it needs hold
// times (basis EstimateHolds); with none seen yet, there is no estimate.
//
// It considers this limit only: the other limits of a waiter on several,
// and later arrivals of higher priority (or aging that reorders the queue)
// are not foreseen. Its cost is the limit's leases (sorted once) plus the
// waiters visited.
type waitSim struct {
	ls  *limitState // set until the first next
	now time.Time
	// t is the grant time of the last waiter visited (grants are in order).
	t       time.Time
	decay   float64
	mean    time.Duration
	samples int
	room    int // the limit less the slots held
	bucket  bucket
	// held are the current leases' expected ends, sorted; started the
	// expected ends of the leases of the waiters granted, in grant order
	// (and so sorted too, all holds lasting the mean).
	held, started []slotRelease
	// hh and sh are the indexes of held's and started's first releases
	// not yet taken (taking from the front by reslicing would reallocate
	// at every append, and lose the capacity kept for the next estimate).
	hh, sh int
	// exact: no lease involved so far (a rate limit with none held, and
	// rate waiters only).
	exact bool
	// done: no estimate for this waiter nor for anyone behind it.
	done    bool
	visited int
}

// newWaitSim is a simulation of ls's queue from now; it reads ls only at
// the first call of next.
func newWaitSim(now time.Time, ls *limitState) *waitSim {
	return &waitSim{ls: ls, now: now, t: now}
}

// sim is newWaitSim with the state's scratch buffers: give them back with
// simDone (the state is used under one lock, one simulation at a time).
func (s *state) sim(now time.Time, ls *limitState) *waitSim {
	e := newWaitSim(now, ls)
	e.held, e.started = s.simScratch.held[:0], s.simScratch.started[:0]
	return e
}

// simDone keeps a simulation's buffers for the next one.
func (s *state) simDone(e *waitSim) {
	s.simScratch.held, s.simScratch.started = e.held[:0], e.started[:0]
}

// simBuffers are the buffers of the state's wait simulations.
type simBuffers struct {
	held, started []slotRelease
}

func (e *waitSim) init() {
	ls := e.ls
	e.ls = nil
	e.decay, e.bucket = ls.cfg.SlotDecayPerSecond, ls.bucket
	e.mean, e.samples = ls.holds.mean, ls.holds.n
	e.room = ls.cfg.Limit - ls.held
	e.exact = e.decay > 0 && len(ls.leases) == 0
	if !e.exact && e.samples == 0 {
		e.done = true
		return
	}
	e.held = e.held[:0]
	for _, l := range ls.leases {
		at := l.acquired.Add(e.mean)
		if at.Before(e.now) {
			at = e.now
		}
		e.held = append(e.held, slotRelease{at: at, n: l.occupy})
	}
	slices.SortFunc(e.held, func(a, b slotRelease) int { return a.at.Compare(b.at) })
}

// next is the estimate of w, the next waiter in service order; nil when
// there is none (no hold time seen, the waiter beyond maxEstimated, or
// never granted by what the simulation knows).
func (e *waitSim) next(w *waiter) *messages.WaitEstimate {
	start, exact, ok := e.step(w)
	if !ok {
		return nil
	}
	return e.wrap(start, exact)
}

// wrap is the estimate of a grant at start, exact as the simulation was
// before that grant.
func (e *waitSim) wrap(start time.Time, exact bool) *messages.WaitEstimate {
	est := &messages.WaitEstimate{Millis: ceilMillis(start.Sub(e.now)), Basis: messages.EstimateRate}
	if !exact {
		est.Basis, est.Samples = messages.EstimateHolds, e.samples
	}
	return est
}

// step plays w, the next waiter in service order: when it is granted and
// whether that is exact; false when the simulation cannot tell (as next's
// nil).
func (e *waitSim) step(w *waiter) (start time.Time, exact, ok bool) {
	if e.ls != nil {
		e.init()
	}
	if e.visited++; e.visited > maxEstimated || (!e.exact && e.samples == 0) {
		e.done = true
	}
	if e.done {
		return time.Time{}, false, false
	}
	exact = e.exact
	if start, ok = e.grantAt(w.occupy); !ok {
		e.done = true
		return time.Time{}, false, false
	}
	if len(w.names) > 1 {
		// A waiter of several limits moves when all of them let it:
		// this limit's arithmetic alone no longer tells when those
		// behind it move (its own estimate takes its other limits too).
		e.exact = false
	}
	e.t = start
	if w.rate {
		e.bucket.add(start, e.decay, w.occupy)
		return start, exact, true
	}
	// A lease: those behind it wait for its end, which only hold times tell.
	e.exact = false
	e.room -= w.occupy
	e.started = append(e.started, slotRelease{at: start.Add(e.mean), n: w.occupy})
	return start, exact, true
}

// grantAt is when occupy slots fit, from the last grant on, freeing the
// expected releases in order as long as they do not; false when they never
// do.
func (e *waitSim) grantAt(occupy int) (time.Time, bool) {
	for {
		if t := e.bucket.fitsAt(e.t, e.decay, e.room, occupy); !t.IsZero() {
			return t, true
		}
		r, ok := e.popRelease()
		if !ok {
			return time.Time{}, false
		}
		if r.at.After(e.t) {
			e.t = r.at
		}
		// A rate limit's freed slots go into its bucket (§10).
		e.room += r.n
		e.bucket.add(r.at, e.decay, r.n)
	}
}

// popRelease takes the earliest expected release.
func (e *waitSim) popRelease() (slotRelease, bool) {
	held, started := e.held[e.hh:], e.started[e.sh:]
	switch {
	case len(held) == 0 && len(started) == 0:
		return slotRelease{}, false
	case len(started) == 0 || (len(held) > 0 && !held[0].at.After(started[0].at)):
		e.hh++
		return held[0], true
	default:
		e.sh++
		return started[0], true
	}
}

// estimate is w's wait estimate at now: on each limit it waits on, from
// the waiters ahead of it there; the longest of them. Nil when a limit
// has none. Its basis is EstimateRate only when every limit's is, and its
// samples the fewest of the limits whose estimate rests on hold times.
func (s *state) estimate(now time.Time, w *waiter) *messages.WaitEstimate {
	var out *messages.WaitEstimate
	for _, n := range w.names {
		ls := s.limits[n]
		if ls == nil {
			return nil
		}
		sim := s.sim(now, ls)
		defer s.simDone(sim)
		var start time.Time
		exact, ok, found := false, false, false
		ls.queue.inOrder(now, s.aging, func(o *waiter) bool {
			start, exact, ok = sim.step(o)
			found = o == w
			return !found && !sim.done
		})
		if !found || !ok {
			return nil
		}
		out = longer(out, sim.wrap(start, exact))
	}
	return out
}

// estimateAt is estimate for a waiter at position pos on its first limit:
// none beyond maxEstimated, without walking the queue to find out.
func (s *state) estimateAt(now time.Time, w *waiter, pos int) *messages.WaitEstimate {
	if pos > maxEstimated {
		return nil
	}
	return s.estimate(now, w)
}

// longer combines the estimates of a waiter's limits.
func longer(a, b *messages.WaitEstimate) *messages.WaitEstimate {
	if a == nil {
		return b
	}
	out := *a
	out.Millis = max(a.Millis, b.Millis)
	switch {
	case a.Basis == messages.EstimateRate && b.Basis == messages.EstimateRate:
	case a.Basis == messages.EstimateRate:
		out.Basis, out.Samples = b.Basis, b.Samples
	case b.Basis != messages.EstimateRate:
		out.Samples = min(a.Samples, b.Samples)
	}
	return &out
}
