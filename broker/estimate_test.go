package broker

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// holdWorkload drives a state on a fake clock the way the broker would
// live: acquisitions of one slot arrive at given times, each holds its
// lease for hold() from its grant and then releases it, and pushed grants
// are accepted at once. It records every queued waiter's estimate and its
// actual wait.
type holdWorkload struct {
	t    *testing.T
	st   *state
	now  time.Time
	name string
	hold func() time.Duration
	// ends are the held leases' release times, by lease id.
	ends     map[string]time.Time
	queuedAt map[string]time.Time
	est      map[string]*messages.WaitEstimate
	waited   map[string]time.Duration
	order    []string // the queued wait ids, in arrival order
}

func newHoldWorkload(t *testing.T, limit int, hold func() time.Duration) *holdWorkload {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", limit)
	return &holdWorkload{t: t, st: st, now: *now, name: "db", hold: hold, ends: map[string]time.Time{},
		queuedAt: map[string]time.Time{}, est: map[string]*messages.WaitEstimate{}, waited: map[string]time.Duration{}}
}

// run plays arrivals (offsets from the start, sorted) and the releases
// until every lease is released; at equal times releases come first.
func (h *holdWorkload) run(arrivals []time.Duration) {
	h.t.Helper()
	start := h.now
	for i := 0; i < len(arrivals) || len(h.ends) > 0; {
		id, at := h.nextRelease()
		if i < len(arrivals) && (id == "" || start.Add(arrivals[i]).Before(at)) {
			h.now = start.Add(arrivals[i])
			h.arrive(fmt.Sprintf("w%d", i))
			i++
			continue
		}
		h.now = at
		delete(h.ends, id)
		fx := &effects{}
		h.st.release(h.now, id, fx)
		h.granted(fx)
	}
}

// nextRelease is the lease released next (the lowest id among equals).
func (h *holdWorkload) nextRelease() (string, time.Time) {
	var id string
	var at time.Time
	for l, t := range h.ends {
		if id == "" || t.Before(at) || (t.Equal(at) && l < id) {
			id, at = l, t
		}
	}
	return id, at
}

func (h *holdWorkload) arrive(waitID string) {
	h.t.Helper()
	fx := &effects{}
	res := h.st.acquire(h.now, h.name, &messages.AcquireRequest{Occupy: 1, WaitID: waitID, Notify: "_INBOX.t." + waitID}, messages.Msgpack, fx)
	switch {
	case res.reply.Error != nil:
		h.t.Fatalf("acquire %s: %v", waitID, res.reply.Error)
	case res.lease != nil:
		h.ends[res.lease.id] = h.now.Add(h.hold())
	default:
		h.queuedAt[waitID], h.est[waitID] = h.now, res.reply.Estimate
		h.order = append(h.order, waitID)
		h.checkOnePass()
	}
}

// granted accepts the pushed grants of fx and starts their holds.
func (h *holdWorkload) granted(fx *effects) {
	for _, g := range fx.grants {
		h.st.accept(h.now, g.w.id, &effects{})
		h.ends[g.lease.id] = h.now.Add(h.hold())
		h.waited[g.w.id] = h.now.Sub(h.queuedAt[g.w.id])
	}
}

// checkOnePass checks that inspect's one-pass estimates are those of the
// waiters' own walks.
func (h *holdWorkload) checkOnePass() {
	h.t.Helper()
	info := h.st.info(h.now, h.st.limits[h.name])
	for _, wt := range info.Waiters {
		own := h.st.estimate(h.now, h.st.waiters[wt.WaitID])
		if (own == nil) != (wt.Estimate == nil) || (own != nil && *own != *wt.Estimate) {
			h.t.Fatalf("at %v waiter %s (position %d): listed estimate %+v, its own %+v", h.now, wt.WaitID, wt.Position, wt.Estimate, own)
		}
	}
}

// estimateErrors are the absolute errors of the estimates given, and the
// actual waits of those waiters.
func (h *holdWorkload) estimateErrors() (errs, waits []time.Duration) {
	for _, id := range h.order {
		e := h.est[id]
		if e == nil {
			continue
		}
		d := time.Duration(e.Millis)*time.Millisecond - h.waited[id]
		errs = append(errs, time.Duration(math.Abs(float64(d))))
		waits = append(waits, h.waited[id])
	}
	return errs, waits
}

func meanOf(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	if len(ds) == 0 {
		return 0
	}
	return sum / time.Duration(len(ds))
}

// TestEstimateExactForFixedHolds: on a limit of 3 whose holds all last
// 2 s, the estimate of every waiter that queued once a hold had ended is
// its actual wait, to the millisecond; the waiters that queued before any
// hold ended get none (unknown, not 0).
func TestEstimateExactForFixedHolds(t *testing.T) {
	h := newHoldWorkload(t, 3, func() time.Duration { return 2 * time.Second })
	arrivals := []time.Duration{0, 0, 0, 0, 0} // 3 held, 2 queued before any hold ended
	for i := 0; i < 20; i++ {
		arrivals = append(arrivals, 2500*time.Millisecond+time.Duration(i)*100*time.Millisecond)
	}
	h.run(arrivals)
	for _, id := range h.order[:2] {
		if h.est[id] != nil {
			t.Errorf("%s queued before any hold ended: estimate %+v, want none", id, h.est[id])
		}
	}
	if len(h.order) != 2+19 {
		t.Fatalf("%d waiters queued, want 21", len(h.order))
	}
	for _, id := range h.order[2:] {
		e := h.est[id]
		if e == nil || e.Basis != messages.EstimateHolds || e.Samples < 1 {
			t.Fatalf("%s: estimate %+v, want one from hold times", id, e)
		}
		if e.Millis != ceilMillis(h.waited[id]) {
			t.Errorf("%s: estimated %dms, waited %v", id, e.Millis, h.waited[id])
		}
	}
	errs, waits := h.estimateErrors()
	t.Logf("fixed 2s holds, limit 3: %d estimates, mean absolute error %v (mean wait %v)", len(errs), meanOf(errs), meanOf(waits))
}

// TestEstimateQualityForRandomHolds states how good the estimate is when
// hold times vary: holds uniform in 1-3 s on a limit of 3, arrivals at
// random at 90% of its capacity (seeded, so the figures are fixed). The
// mean absolute error of the estimates is bounded by a third of the mean
// wait (the measured figure is logged).
func TestEstimateQualityForRandomHolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 4))
	h := newHoldWorkload(t, 3, func() time.Duration {
		return time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
	})
	// Capacity: 3 slots / 2 s mean hold = 1.5 a second; arrivals at 1.35.
	var arrivals []time.Duration
	var at time.Duration
	for i := 0; i < 500; i++ {
		at += time.Duration(rng.ExpFloat64() / 1.35 * float64(time.Second))
		arrivals = append(arrivals, at)
	}
	h.run(arrivals)
	errs, waits := h.estimateErrors()
	if len(errs) < 100 {
		t.Fatalf("only %d estimates given: the workload does not queue enough", len(errs))
	}
	mae, mw := meanOf(errs), meanOf(waits)
	rel := float64(mae) / float64(mw)
	var within int
	for i := range errs {
		if errs[i] <= time.Second {
			within++
		}
	}
	t.Logf("holds uniform 1-3s, limit 3, load 90%%: %d estimates, mean absolute error %v, mean wait %v: error %.1f%% of the mean wait; %.0f%% within 1s",
		len(errs), mae.Round(time.Millisecond), mw.Round(time.Millisecond), 100*rel, 100*float64(within)/float64(len(errs)))
	if rel > 1.0/3 {
		t.Errorf("mean absolute error %v is %.1f%% of the mean wait %v, want at most 33%%", mae, 100*rel, mw)
	}
}

// TestEstimateExactOnRateLimit: on a rate limit the estimate is the
// bucket's arithmetic, so every queued admission is granted exactly when
// its estimate said (to the millisecond, at any decay rate), and a re-sent
// acquisition is told exactly what is left.
func TestEstimateExactOnRateLimit(t *testing.T) {
	for _, decay := range []float64{2, 3, 0.8} {
		t.Run(fmt.Sprint(decay), func(t *testing.T) {
			st, nowp := fakeState(t)
			now := *nowp
			if r := st.create(now, "api", &messages.CreateRequest{Limit: 5, SlotDecayPerSecond: decay}, &effects{}); r.Error != nil {
				t.Fatal(r.Error)
			}
			for i := 0; i < 5; i++ { // the burst
				acquireOK(t, st, now, "api", messages.AcquireRequest{Occupy: 1, Rate: true, Try: true})
			}
			type queued struct {
				at  time.Time
				est *messages.WaitEstimate
			}
			waits := map[string]queued{}
			resent := map[string]queued{}
			grantedAt := map[string]time.Time{}
			var ids []string
			arrive := func(i int) {
				id := fmt.Sprintf("w%d", i)
				r := acquireOK(t, st, now, "api", messages.AcquireRequest{Occupy: 1 + i%2, Rate: true, WaitID: id, Notify: "_INBOX.t." + id})
				if r.reply.Status != messages.StatusQueued {
					t.Fatalf("%s: %+v, want queued", id, r.reply)
				}
				waits[id] = queued{at: now, est: r.reply.Estimate}
				ids = append(ids, id)
			}
			for i := 0; i < 10; i++ {
				arrive(i)
			}
			arrivals := []time.Duration{1300 * time.Millisecond, 1300 * time.Millisecond, 2 * time.Second, 4100 * time.Millisecond}
			start, next, resend := now, 10, now.Add(2500*time.Millisecond)
			for len(grantedAt) < len(ids) || len(arrivals) > 0 {
				wake := st.wakeAt(now, "api")
				switch {
				case len(arrivals) > 0 && (wake.IsZero() || !start.Add(arrivals[0]).After(wake)):
					now = start.Add(arrivals[0])
					arrivals = arrivals[1:]
					arrive(next)
					next++
					continue
				case wake.IsZero():
					t.Fatalf("%d waiters left and no wake time", len(ids)-len(grantedAt))
				}
				if !resend.IsZero() && resend.Before(wake) {
					// Every waiter left sends its acquisition again.
					now, resend = resend, time.Time{}
					for _, id := range ids {
						if _, ok := grantedAt[id]; !ok {
							r := acquireOK(t, st, now, "api", messages.AcquireRequest{Occupy: 1, Rate: true, WaitID: id}) // a retry: answered from the waiter
							if r.reply.Error == nil && r.reply.Status == messages.StatusQueued {
								resent[id] = queued{at: now, est: r.reply.Estimate}
							}
						}
					}
					continue
				}
				now = wake
				fx := &effects{}
				st.dispatch(now, fx, "api")
				for _, g := range fx.grants {
					grantedAt[g.w.id] = now
					st.accept(now, g.w.id, &effects{})
				}
			}
			for _, id := range ids {
				q := waits[id]
				if q.est == nil || q.est.Basis != messages.EstimateRate {
					t.Fatalf("%s: estimate %+v, want one of basis rate", id, q.est)
				}
				if want := ceilMillis(grantedAt[id].Sub(q.at)); q.est.Millis != want {
					t.Errorf("%s: estimated %dms, granted after %dms", id, q.est.Millis, want)
				}
			}
			if len(resent) == 0 {
				t.Fatal("no waiter was left to send its acquisition again")
			}
			for id, q := range resent {
				if want := ceilMillis(grantedAt[id].Sub(q.at)); q.est == nil || q.est.Millis != want {
					t.Errorf("%s sent again: estimate %+v, granted %dms later", id, q.est, want)
				}
			}
		})
	}
}

// TestEstimateOfWaiterOnSeveralLimits: a waiter on several limits is told
// the longest of its limits' estimates, resting on hold times when one of
// them does; a waiter on a limit that has seen no hold end is told none.
func TestEstimateOfWaiterOnSeveralLimits(t *testing.T) {
	st, nowp := fakeState(t)
	now := *nowp
	mustCreate(t, st, now, "db", 1)
	if r := st.create(now, "api", &messages.CreateRequest{Limit: 2, SlotDecayPerSecond: 0.2}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
	first := acquireOK(t, st, now, "db", messages.AcquireRequest{Occupy: 1}).lease
	r := acquireOK(t, st, now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "early", Notify: "_INBOX.t.early"})
	if r.reply.Status != messages.StatusQueued || r.reply.Estimate != nil {
		t.Fatalf("before any hold on db: %+v (estimate %+v), want queued with no estimate", r.reply, r.reply.Estimate)
	}
	// A 4 s hold ends: "early" is granted and expected to hold db for 4 s.
	now = now.Add(4 * time.Second)
	fx := &effects{}
	st.release(now, first.id, fx)
	if len(fx.grants) != 1 {
		t.Fatalf("%d grants at the release, want 1", len(fx.grants))
	}
	st.accept(now, "early", &effects{})
	// api is full, and has one slot again in 5 s (0.2 a second).
	acquireOK(t, st, now, "api", messages.AcquireRequest{Occupy: 2, Rate: true, Try: true})

	r = acquireOK(t, st, now, "db", messages.AcquireRequest{Occupy: 1, Names: []string{"api"}, WaitID: "both", Notify: "_INBOX.t.both"})
	want := messages.WaitEstimate{Millis: 5000, Basis: messages.EstimateHolds, Samples: 1}
	if e := r.reply.Estimate; e == nil || *e != want {
		t.Fatalf("estimate %+v, want %+v: api's 5 s, longer than db's 4 s, from db's hold time", e, want)
	}
	for name, ms := range map[string]int64{"db": 4000, "api": 5000} {
		info := st.info(now, st.limits[name])
		if len(info.Waiters) != 1 || info.Waiters[0].Estimate == nil || info.Waiters[0].Estimate.Millis != ms {
			t.Errorf("inspect %s: waiters %+v, want one estimated at %dms on %s", name, info.Waiters, ms, name)
		}
	}
}

// TestAnExactRateEstimateHoldsBehindAWaiterOfSeveralLimits: an estimate
// with basis "rate" is the grant time to the nanosecond (PROTOCOL.md §7.6),
// and the exceptions listed there are a change of the limit, a cancel or
// decline ahead, or a higher priority queueing ahead. A waiter ahead that
// also waits on another limit is none of those, yet it blocks the queue
// (strict head-of-line) until that other limit lets it go: an estimate
// that leaves it out must not claim to be exact.
func TestAnExactRateEstimateHoldsBehindAWaiterOfSeveralLimits(t *testing.T) {
	st, now := fakeState(t)
	for _, c := range []struct {
		name  string
		decay float64
	}{{"api", 1}, {"slow", 0.01}} { // api drains a slot a second, slow one in 100 s
		if r := st.create(*now, c.name, &messages.CreateRequest{Limit: 1, SlotDecayPerSecond: c.decay}, &effects{}); r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	acquireOK(t, st, *now, "slow", messages.AcquireRequest{Occupy: 1, Rate: true, Try: true}) // slow is full for 100 s
	head := acquireOK(t, st, *now, "api", messages.AcquireRequest{Names: []string{"slow"}, Occupy: 1, Rate: true,
		WaitID: "both", Notify: "_INBOX.c.both", Key: "kkkkkkkkkkkkkkkkkkkk"})
	if head.reply.Status != messages.StatusQueued {
		t.Fatalf("the acquisition of api and slow: %+v, want queued", head.reply)
	}
	behind := acquireOK(t, st, *now, "api", messages.AcquireRequest{Occupy: 1, Rate: true,
		WaitID: "api-only", Notify: "_INBOX.c.api-only", Key: "kkkkkkkkkkkkkkkkkkkk"})
	est := behind.reply.Estimate
	if behind.reply.Status != messages.StatusQueued || est == nil || est.Basis != messages.EstimateRate {
		t.Skipf("no exact estimate given: %+v", behind.reply)
	}
	// The clock reaches the promised grant time; the broker's timers
	// dispatch api then.
	*now = now.Add(time.Duration(est.Millis) * time.Millisecond)
	fx := &effects{}
	st.dispatch(*now, fx, "api", "slow")
	for _, g := range fx.grants {
		if g.w.id == "api-only" {
			return
		}
	}
	t.Fatalf("the estimate said exactly %d ms (basis %q), but at that time api-only is still queued behind %q, which waits on slow for %v more",
		est.Millis, est.Basis, "both", st.limits["slow"].bucket.tat.Sub(*now))
}
