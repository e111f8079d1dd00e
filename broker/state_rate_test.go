package broker

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// rateSim drives a state with a fake clock like the broker does: effects
// are collected, pushed rate grants are accepted at once, and the decay
// waker fires at wakeAt.
type rateSim struct {
	t        *testing.T
	st       *state
	now      time.Time
	admitted []time.Time // one entry per admission event, in order
	granted  []string    // wait ids of pushed rate grants, in order
	limitRec map[string][]byte
	waitRec  map[string][]byte
	waitSeq  []string // wait ids in the order their records were first written
	n        int
}

func newRateSim(t *testing.T) *rateSim {
	t.Helper()
	sim := &rateSim{t: t, now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		limitRec: map[string][]byte{}, waitRec: map[string][]byte{}}
	sim.st = newState(ttlBounds{def: 10 * time.Second, min: time.Second, max: time.Hour}, sim.id)
	return sim
}

func (sim *rateSim) id() string {
	sim.n++
	return fmt.Sprintf("r%d", sim.n)
}

// apply records fx the way the broker persists and pushes it.
func (sim *rateSim) apply(fx *effects) {
	for _, op := range fx.ops {
		kind, id := keyKind(op.key)
		switch {
		case kind == limitKeyPrefix && op.val != nil:
			sim.limitRec[id] = op.val
		case kind == limitKeyPrefix:
			delete(sim.limitRec, id)
		case kind == waiterKeyPrefix && op.val != nil:
			if _, ok := sim.waitRec[id]; !ok {
				sim.waitSeq = append(sim.waitSeq, id)
			}
			sim.waitRec[id] = op.val
		case kind == waiterKeyPrefix:
			delete(sim.waitRec, id)
		}
	}
	for _, name := range fx.dirty {
		if ls := sim.st.limits[name]; ls != nil {
			sim.limitRec[name] = ls.record()
		}
	}
	for _, ev := range fx.events {
		if ev.Kind == messages.EventAdmitted {
			sim.admitted = append(sim.admitted, ev.At)
		}
	}
	for _, g := range fx.grants {
		if g.lease == nil {
			sim.granted = append(sim.granted, g.w.id)
			afx := &effects{}
			sim.st.accept(sim.now, g.w.id, afx)
			sim.apply(afx)
		}
	}
}

func (sim *rateSim) create(name string, limit int, decay float64) {
	sim.t.Helper()
	fx := &effects{}
	if r := sim.st.create(sim.now, name, &messages.CreateRequest{Limit: limit, SlotDecayPerSecond: decay}, fx); r.Error != nil {
		sim.t.Fatal(r.Error)
	}
	sim.apply(fx)
}

// rate asks for a rate admission; queue makes it wait (Notify set) instead of failing.
func (sim *rateSim) rate(name string, occupy int, queue bool, more ...string) messages.AcquireReply {
	sim.t.Helper()
	req := &messages.AcquireRequest{Names: more, Occupy: occupy, Rate: true, Try: !queue}
	if queue {
		req.WaitID = sim.id()
		req.Notify = "_INBOX.test." + req.WaitID
	}
	fx := &effects{}
	res := sim.st.acquire(sim.now, name, req, messages.Msgpack, fx)
	sim.apply(fx)
	if res.lease != nil {
		sim.t.Fatalf("rate admission returned a lease %s", res.lease.id)
	}
	return res.reply
}

// wake is what the broker's waker does at wakeAt(name).
func (sim *rateSim) wake(name string) {
	fx := &effects{}
	sim.st.dispatch(sim.now, fx, name)
	sim.apply(fx)
}

// next is the earliest wake time over names; zero when none is armed.
func (sim *rateSim) next(names ...string) time.Time {
	var w time.Time
	for _, n := range names {
		if t := sim.st.wakeAt(sim.now, n); !t.IsZero() && (w.IsZero() || t.Before(w)) {
			w = t
		}
	}
	return w
}

// run advances the clock waker by waker until no waiter is left or until the deadline.
func (sim *rateSim) run(until time.Time, names ...string) {
	sim.t.Helper()
	for {
		w := sim.next(names...)
		if w.IsZero() || w.After(until) {
			return
		}
		if w.After(sim.now) {
			sim.now = w
		}
		before := len(sim.admitted)
		for _, n := range names {
			sim.wake(n)
		}
		if again := sim.next(names...); len(sim.admitted) == before && !again.IsZero() && !again.After(sim.now) {
			sim.t.Fatalf("waker fired at %v, admitted nothing and is armed for now again: it would spin", sim.now)
		}
	}
}

func (sim *rateSim) info(name string) messages.LimitInfo {
	return sim.st.info(sim.now, sim.st.limits[name])
}

func wantCode(t *testing.T, r messages.AcquireReply, code messages.Code) {
	t.Helper()
	if r.Error == nil || r.Error.Code != code {
		t.Fatalf("reply %+v, want error %s", r, code)
	}
}

func wantGranted(t *testing.T, r messages.AcquireReply) {
	t.Helper()
	if r.Error != nil || r.Status != messages.StatusGranted {
		t.Fatalf("reply %+v (error %v), want granted", r, r.Error)
	}
}

func wantQueued(t *testing.T, r messages.AcquireReply) {
	t.Helper()
	if r.Error != nil || r.Status != messages.StatusQueued {
		t.Fatalf("reply %+v (error %v), want queued", r, r.Error)
	}
}

// checkSchedule asserts admission i happened at start + offsets(i).
func checkSchedule(t *testing.T, got []time.Time, start time.Time, want func(i int) time.Duration) {
	t.Helper()
	for i, g := range got {
		if w := start.Add(want(i)); !g.Equal(w) {
			t.Fatalf("admission %d at t+%v, want t+%v", i+1, g.Sub(start), w.Sub(start))
		}
	}
}

// TestRateBurstThenSteady: L=5, d=50/s: 5 at once, then one every 20 ms,
// FIFO, each woken exactly when its slot has decayed.
func TestRateBurstThenSteady(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("api", 5, 50)
	for i := 0; i < 5; i++ {
		wantGranted(t, sim.rate("api", 1, true))
	}
	wantCode(t, sim.rate("api", 1, false), messages.CodeNoSlots)
	var ids []string
	for i := 0; i < 20; i++ {
		r := sim.rate("api", 1, true)
		wantQueued(t, r)
		if r.Position != i+1 {
			t.Fatalf("queued at %d, want %d", r.Position, i+1)
		}
		ids = append(ids, fmt.Sprintf("r%d", sim.n))
	}
	// A try does not jump the queue even once a slot has decayed.
	sim.now = start.Add(25 * time.Millisecond)
	wantCode(t, sim.rate("api", 1, false), messages.CodeNoSlots)
	sim.now = start
	if w := sim.st.wakeAt(sim.now, "api"); !w.Equal(start.Add(20 * time.Millisecond)) {
		t.Fatalf("wakeAt t+%v, want t+20ms", w.Sub(start))
	}
	sim.now = start.Add(20*time.Millisecond - time.Microsecond)
	sim.wake("api")
	if len(sim.admitted) != 5 {
		t.Fatalf("%d admitted 1µs before the slot decayed, want 5", len(sim.admitted))
	}
	sim.run(start.Add(time.Hour), "api")
	if len(sim.admitted) != 25 {
		t.Fatalf("%d admitted, want 25", len(sim.admitted))
	}
	checkSchedule(t, sim.admitted, start, func(i int) time.Duration {
		if i < 5 {
			return 0
		}
		return time.Duration(i-4) * 20 * time.Millisecond
	})
	for i, id := range ids {
		if sim.granted[i] != id {
			t.Fatalf("grant %d went to %s, want %s (FIFO)", i, sim.granted[i], id)
		}
	}
	if len(sim.waitRec) != 0 {
		t.Fatalf("%d waiter records left after all accepted", len(sim.waitRec))
	}
	if len(sim.st.waiters) != 0 {
		t.Fatalf("%d waiters left", len(sim.st.waiters))
	}
}

// TestRateFractional: 0.5/s (a slot every 2 s) and 1000/s (every 1 ms).
func TestRateFractional(t *testing.T) {
	for _, c := range []struct {
		limit int
		decay float64
		every time.Duration
	}{{2, 0.5, 2 * time.Second}, {10, 1000, time.Millisecond}, {3, 3, time.Second / 3}} {
		t.Run(fmt.Sprint(c.decay), func(t *testing.T) {
			sim := newRateSim(t)
			start := sim.now
			sim.create("r", c.limit, c.decay)
			for i := 0; i < c.limit+30; i++ {
				r := sim.rate("r", 1, true)
				if r.Error != nil {
					t.Fatal(r.Error)
				}
			}
			sim.run(start.Add(24*time.Hour), "r")
			if len(sim.admitted) != c.limit+30 {
				t.Fatalf("%d admitted, want %d", len(sim.admitted), c.limit+30)
			}
			last := sim.admitted[len(sim.admitted)-1].Sub(start)
			want := time.Duration(float64(30) / c.decay * float64(time.Second))
			if d := last - want; d < -time.Microsecond || d > time.Microsecond {
				t.Fatalf("last admission at t+%v, want t+%v", last, want)
			}
			for i := c.limit + 1; i < len(sim.admitted); i++ {
				gap := sim.admitted[i].Sub(sim.admitted[i-1])
				if d := gap - c.every; d < -time.Nanosecond || d > time.Nanosecond {
					t.Fatalf("gap %d is %v, want %v", i, gap, c.every)
				}
			}
		})
	}
}

// TestRateOccupyMany: occupy 3 of 5 at 2/s; a second 3 waits until one slot decays.
func TestRateOccupyMany(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 5, 2)
	wantGranted(t, sim.rate("r", 3, true))
	wantQueued(t, sim.rate("r", 3, true))
	wantQueued(t, sim.rate("r", 1, true)) // behind the 3: FIFO, no overtaking
	if w := sim.st.wakeAt(sim.now, "r"); !w.Equal(start.Add(500 * time.Millisecond)) {
		t.Fatalf("wakeAt t+%v, want t+500ms", w.Sub(start))
	}
	sim.run(start.Add(time.Hour), "r")
	checkSchedule(t, sim.admitted, start, func(i int) time.Duration {
		return []time.Duration{0, 500 * time.Millisecond, time.Second}[i]
	})
	if got := sim.info("r").ActiveSlots; got != 5 {
		t.Fatalf("active %d, want 5", got)
	}
	wantCode(t, sim.rate("r", 6, true), messages.CodeInvalidOccupy)
	wantCode(t, sim.rate("r", 0, false), messages.CodeInvalidOccupy)
}

// TestRateErrors: no decay, missing, inactive, strict.
func TestRateErrors(t *testing.T) {
	sim := newRateSim(t)
	sim.create("conc", 2, 0)
	r := sim.rate("conc", 1, true)
	wantCode(t, r, messages.CodeNotRateLimit)
	if want := "only limits with slot_decay_per_second > 0"; !contains(r.Error.Message, want) {
		t.Fatalf("message %q lacks %q", r.Error.Message, want)
	}
	if len(sim.st.waiters) != 0 {
		t.Fatal("a failed rate request was queued")
	}
	r = sim.rate("nope", 1, true)
	wantGranted(t, r)
	if len(r.Missing) != 1 || r.Missing[0] != "nope" {
		t.Fatalf("missing %v, want [nope]", r.Missing)
	}
	sim.create("off", 1, 1)
	fx := &effects{}
	sim.st.update(sim.now, "off", &messages.UpdateRequest{Active: new(bool)}, fx)
	sim.apply(fx)
	for i := 0; i < 3; i++ {
		r = sim.rate("off", 1, false)
		wantGranted(t, r)
	}
	if len(r.Inactive) != 1 || sim.info("off").ActiveSlots != 0 {
		t.Fatalf("inactive %v, active slots %d: an inactive limit must not count", r.Inactive, sim.info("off").ActiveSlots)
	}
	for _, name := range []string{"nope", "off"} {
		req := &messages.AcquireRequest{Occupy: 1, Rate: true, Strict: true, Try: true}
		res := sim.st.acquire(sim.now, name, req, messages.Msgpack, &effects{})
		if res.reply.Error == nil {
			t.Fatalf("strict rate on %s succeeded", name)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestRateTriesDoNotSlowDecay: frequent failed tries write nothing and do
// not reset the bucket (Prefect's updated-reset bug).
func TestRateTriesDoNotSlowDecay(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 1, 1)
	wantGranted(t, sim.rate("r", 1, false))
	tat := sim.st.limits["r"].bucket.tat
	for ms := 1; ms < 1000; ms += 7 {
		sim.now = start.Add(time.Duration(ms) * time.Millisecond)
		fx := &effects{}
		res := sim.st.acquire(sim.now, "r", &messages.AcquireRequest{Occupy: 1, Rate: true, Try: true}, messages.Msgpack, fx)
		wantCode(t, res.reply, messages.CodeNoSlots)
		if len(fx.ops) != 0 || len(fx.dirty) != 0 {
			t.Fatalf("a failed try wrote %d records and %d limits", len(fx.ops), len(fx.dirty))
		}
	}
	if !sim.st.limits["r"].bucket.tat.Equal(tat) {
		t.Fatal("failed tries moved the bucket")
	}
	sim.now = start.Add(time.Second)
	wantGranted(t, sim.rate("r", 1, false))
}

// TestRateChangeDecayMidStream: level 4 at d=1 changed to d=2 drains in 2 s,
// and the queued head's wake time moves with it.
func TestRateChangeDecayMidStream(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 4, 1)
	for i := 0; i < 4; i++ {
		wantGranted(t, sim.rate("r", 1, true))
	}
	wantQueued(t, sim.rate("r", 2, true))
	if w := sim.st.wakeAt(sim.now, "r"); !w.Equal(start.Add(2 * time.Second)) {
		t.Fatalf("wakeAt t+%v at d=1, want t+2s", w.Sub(start))
	}
	d2 := 2.0
	fx := &effects{}
	if r := sim.st.update(sim.now, "r", &messages.UpdateRequest{SlotDecayPerSecond: &d2}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	sim.apply(fx)
	if !containsName(fx.wake, "r") {
		t.Fatalf("update did not recompute the waker: wake %v", fx.wake)
	}
	if w := sim.st.wakeAt(sim.now, "r"); !w.Equal(start.Add(time.Second)) {
		t.Fatalf("wakeAt t+%v at d=2, want t+1s", w.Sub(start))
	}
	steps := []struct {
		now    time.Duration
		active int
	}{{0, 4}, {500 * time.Millisecond, 3}, {time.Second, 4}, {2 * time.Second, 2}, {3 * time.Second, 0}}
	for _, s := range steps {
		sim.now = start.Add(s.now)
		sim.run(sim.now, "r")
		if got := sim.info("r").ActiveSlots; got != s.active {
			t.Fatalf("t+%v: active %d, want %d", s.now, got, s.active)
		}
	}
	checkSchedule(t, sim.admitted, start, func(i int) time.Duration {
		if i < 4 {
			return 0
		}
		return time.Second
	})
	// Mid-stream, halve it: level 4 at d=2 stays level 4, now draining in 4 s.
	wantGranted(t, sim.rate("r", 4, true)) // level 4 at t+3s
	d1 := 1.0
	fx = &effects{}
	sim.st.update(sim.now, "r", &messages.UpdateRequest{SlotDecayPerSecond: &d1}, fx)
	sim.apply(fx)
	if got := sim.info("r").ActiveSlots; got != 4 {
		t.Fatalf("active %d right after the change, want 4 (level kept)", got)
	}
	sim.now = start.Add(6 * time.Second)
	if got := sim.info("r").ActiveSlots; got != 1 {
		t.Fatalf("active %d 3 s after d=1, want 1", got)
	}
}

func containsName(names []string, n string) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// TestRateRaiseLimitAdmitsWaiters: raising the limit admits queued callers at once.
func TestRateRaiseLimitAdmitsWaiters(t *testing.T) {
	sim := newRateSim(t)
	sim.create("r", 2, 0.1)
	wantGranted(t, sim.rate("r", 1, true))
	wantGranted(t, sim.rate("r", 1, true))
	for i := 0; i < 3; i++ {
		wantQueued(t, sim.rate("r", 1, true))
	}
	five := 5
	fx := &effects{}
	sim.st.update(sim.now, "r", &messages.UpdateRequest{Limit: &five}, fx)
	sim.apply(fx)
	if len(sim.granted) != 3 || len(sim.admitted) != 5 {
		t.Fatalf("%d grants, %d admitted after raising the limit, want 3 and 5", len(sim.granted), len(sim.admitted))
	}
	if w := sim.st.wakeAt(sim.now, "r"); !w.IsZero() {
		t.Fatalf("waker armed at %v with an empty queue", w)
	}
	// Lowering below the level revokes nothing but admits nobody until it drains.
	one := 1
	sim.st.update(sim.now, "r", &messages.UpdateRequest{Limit: &one}, &effects{})
	if got := sim.info("r"); got.ActiveSlots != 5 || got.NextSlotInMillis != 50_000 {
		t.Fatalf("active %d next %dms after lowering to 1, want 5 and 50000", got.ActiveSlots, got.NextSlotInMillis)
	}
}

// TestRateAcquireOnDecayingLimit: a lease's slots count as held while it
// lives; on release or expiry they enter the bucket and decay; a second
// release does nothing.
func TestRateAcquireOnDecayingLimit(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 2, 1)
	lease := func() *lease {
		t.Helper()
		fx := &effects{}
		res := sim.st.acquire(sim.now, "r", &messages.AcquireRequest{Occupy: 1, TTLMillis: 5000}, messages.Msgpack, fx)
		sim.apply(fx)
		if res.lease == nil {
			t.Fatalf("no lease: %+v", res.reply)
		}
		return res.lease
	}
	l1, l2 := lease(), lease()
	wantQueued(t, sim.rate("r", 1, true))
	sim.now = start.Add(3 * time.Second)
	if got := sim.info("r"); got.ActiveSlots != 2 || got.NextSlotInMillis != 0 {
		t.Fatalf("held slots: active %d next %d, want 2 and 0 (held slots do not decay)", got.ActiveSlots, got.NextSlotInMillis)
	}
	if w := sim.st.wakeAt(sim.now, "r"); !w.IsZero() {
		t.Fatalf("waker armed at t+%v while only a release can help", w.Sub(start))
	}
	fx := &effects{}
	sim.st.release(sim.now, l1.id, fx)
	sim.apply(fx)
	if len(sim.admitted) != 0 {
		t.Fatal("a released slot was free before it decayed")
	}
	if r := sim.st.release(sim.now, l1.id, &effects{}); r.Released {
		t.Fatal("second release succeeded")
	}
	info := sim.info("r")
	if info.ActiveSlots != 2 || info.NextSlotInMillis != 1000 {
		t.Fatalf("after release: active %d next %dms, want 2 and 1000", info.ActiveSlots, info.NextSlotInMillis)
	}
	if w := sim.st.wakeAt(sim.now, "r"); !w.Equal(start.Add(4 * time.Second)) {
		t.Fatalf("wakeAt t+%v, want t+4s", w.Sub(start))
	}
	sim.run(start.Add(time.Hour), "r")
	checkSchedule(t, sim.admitted, start, func(int) time.Duration { return 4 * time.Second })
	// Expiry puts l2's slot in the bucket too, at its deadline.
	sim.now = l2.expires
	fx = &effects{}
	if !sim.st.expire(sim.now, l2.id, fx) {
		t.Fatal("lease did not expire at its deadline")
	}
	sim.apply(fx)
	if got := sim.st.limits["r"].bucket.level(sim.now, 1); !bNear(got, 1) {
		// The admission at t+4s has decayed by t+5s; l2's slot is the level.
		t.Fatalf("level %v after expiry, want 1", got)
	}
	if got := sim.info("r").ActiveSlots; got != 1 {
		t.Fatalf("active %d after expiry, want 1", got)
	}
	if sim.st.expire(sim.now, l2.id, &effects{}) || sim.st.release(sim.now, l2.id, &effects{}).Released {
		t.Fatal("an expired lease was freed twice")
	}
	if got := sim.st.limits["r"].bucket.level(sim.now, 1); !bNear(got, 1) {
		t.Fatalf("level %v after a second free, want 1 (no double release)", got)
	}
}

// TestRateInfoDecayedOccupancy: ActiveSlots counts undecayed slots and
// NextSlotInMillis is the time until one is free, only when none is.
func TestRateInfoDecayedOccupancy(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 3, 0.5)
	for i := 0; i < 3; i++ {
		wantGranted(t, sim.rate("r", 1, false))
	}
	steps := []struct {
		now    time.Duration
		active int
		next   int64
	}{
		{0, 3, 2000},
		{500 * time.Millisecond, 3, 1500},
		{1999 * time.Millisecond, 3, 1},
		{1999*time.Millisecond + 500*time.Microsecond, 3, 1}, // rounded up, never 0 while none is free
		{2 * time.Second, 2, 0},
		{5 * time.Second, 1, 0},
		{6 * time.Second, 0, 0},
	}
	for _, s := range steps {
		sim.now = start.Add(s.now)
		got := sim.info("r")
		if got.ActiveSlots != s.active || got.NextSlotInMillis != s.next {
			t.Errorf("t+%v: active %d next %dms, want %d and %dms", s.now, got.ActiveSlots, got.NextSlotInMillis, s.active, s.next)
		}
		if l := sim.st.listAfter(sim.now, "", listedInPages); len(l) != 1 || l[0].ActiveSlots != s.active || l[0].NextSlotInMillis != s.next {
			t.Errorf("t+%v: list disagrees with get: %+v", s.now, l)
		}
	}
}

// rebuild makes a new state from the records the way store.go does:
// limits with their tat, then waiters in the order they were written.
func (sim *rateSim) rebuild() {
	sim.t.Helper()
	st := newState(sim.st.ttl, sim.id)
	for _, raw := range sim.limitRec {
		var r limitRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			sim.t.Fatal(err)
		}
		ls := newLimitState(r.Limit)
		ls.bucket.tat = r.TAT
		st.limits[r.Name] = ls
	}
	for _, id := range sim.waitSeq {
		raw, ok := sim.waitRec[id]
		if !ok {
			continue
		}
		var r waiterRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			sim.t.Fatal(err)
		}
		st.enqueue(r.waiter())
	}
	sim.st = st
	fx := &effects{}
	for n := range st.limits {
		st.dispatch(sim.now, fx, n)
	}
	sim.apply(fx)
}

// TestRateRestartMidStream: a state rebuilt from the records continues the
// schedule: no free burst, queued callers kept in order.
func TestRateRestartMidStream(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("r", 5, 10)
	for i := 0; i < 5; i++ {
		wantGranted(t, sim.rate("r", 1, true))
	}
	for i := 0; i < 10; i++ {
		wantQueued(t, sim.rate("r", 1, true))
	}
	sim.run(start.Add(350*time.Millisecond), "r") // 3 more at 100, 200, 300 ms
	if len(sim.admitted) != 8 {
		t.Fatalf("%d admitted before restart, want 8", len(sim.admitted))
	}
	queued := append([]string(nil), sim.waitSeq[len(sim.waitSeq)-7:]...)
	sim.now = start.Add(370 * time.Millisecond)
	sim.rebuild()
	if len(sim.admitted) != 8 {
		t.Fatalf("the restart admitted %d at once: a free burst", len(sim.admitted)-8)
	}
	if got := sim.info("r"); got.ActiveSlots != 5 || len(got.Waiters) != 7 {
		t.Fatalf("after restart: active %d, %d waiters, want 5 and 7", got.ActiveSlots, len(got.Waiters))
	}
	for i, w := range sim.info("r").Waiters {
		if w.WaitID != queued[i] {
			t.Fatalf("waiter %d is %s after restart, want %s", i, w.WaitID, queued[i])
		}
	}
	wantCode(t, sim.rate("r", 1, false), messages.CodeNoSlots)
	sim.run(start.Add(time.Hour), "r")
	checkSchedule(t, sim.admitted, start, func(i int) time.Duration {
		if i < 5 {
			return 0
		}
		return time.Duration(i-4) * 100 * time.Millisecond
	})
	if len(sim.admitted) != 15 {
		t.Fatalf("%d admitted, want 15", len(sim.admitted))
	}
	// Restart of a drained bucket: a full burst again, no more.
	sim.now = start.Add(time.Hour)
	sim.rebuild()
	for i := 0; i < 5; i++ {
		wantGranted(t, sim.rate("r", 1, false))
	}
	wantCode(t, sim.rate("r", 1, false), messages.CodeNoSlots)
}

// TestRateMultiLimitWakerDoesNotSpin: the head of a rate limit that is not
// yet first on its other limit must not arm a timer that fires at once
// forever; once first everywhere it is woken when it fits in all.
func TestRateMultiLimitWakerDoesNotSpin(t *testing.T) {
	sim := newRateSim(t)
	start := sim.now
	sim.create("a", 1, 1)
	sim.create("b", 1, 1)
	fx := &effects{}
	hold := sim.st.acquire(sim.now, "b", &messages.AcquireRequest{Occupy: 1}, messages.Msgpack, fx).lease
	sim.apply(fx)
	wantGranted(t, sim.rate("a", 1, true))
	// x waits for b's lease, w for a's decay and for b behind x.
	fx = &effects{}
	x := sim.st.acquire(sim.now, "b", &messages.AcquireRequest{Occupy: 1, WaitID: "x", Notify: "_INBOX.x"}, messages.Msgpack, fx)
	sim.apply(fx)
	wantQueued(t, x.reply)
	wantQueued(t, sim.rate("a", 1, true, "b"))
	sim.now = start.Add(2 * time.Second)
	sim.wake("a")
	if w := sim.st.wakeAt(sim.now, "a"); !w.IsZero() {
		t.Fatalf("waker for a armed at t+%v while its head is second on b: it would fire in a loop", w.Sub(start))
	}
	fx = &effects{}
	sim.st.release(sim.now, hold.id, fx) // b's slot decays until t+3s, then x gets it
	sim.apply(fx)
	sim.run(start.Add(3*time.Second), "a", "b")
	xl := sim.st.byWait["x"]
	if xl == nil || !xl.acquired.Equal(start.Add(3*time.Second)) {
		t.Fatalf("x was not granted b at t+3s: %+v", xl)
	}
	if w := sim.st.wakeAt(sim.now, "a"); !w.IsZero() {
		t.Fatalf("waker for a armed at t+%v while b is held", w.Sub(start))
	}
	fx = &effects{}
	sim.st.release(sim.now, xl.id, fx) // b's slot decays until t+4s
	sim.apply(fx)
	if w := sim.st.wakeAt(sim.now, "a"); !w.Equal(start.Add(4 * time.Second)) {
		t.Fatalf("waker for a at t+%v, want t+4s (when b has decayed too)", w.Sub(start))
	}
	sim.run(start.Add(time.Hour), "a", "b")
	checkSchedule(t, sim.admitted[1:], start, func(int) time.Duration { return 4 * time.Second })
	if len(sim.admitted) != 3 { // a at t0, then a and b for w
		t.Fatalf("%d admission events, want 3", len(sim.admitted))
	}
}
