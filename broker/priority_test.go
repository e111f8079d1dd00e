package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// queueWaiter queues an acquisition of one slot at priority p on name.
func queueWaiter(t *testing.T, st *state, now time.Time, name, id string, p int) acquireResult {
	t.Helper()
	r := acquireOK(t, st, now, name, messages.AcquireRequest{Occupy: 1, WaitID: id, Notify: "n." + id, Priority: p})
	if r.reply.Status != messages.StatusQueued {
		t.Fatalf("%s not queued: %+v", id, r.reply)
	}
	return r
}

// grantOrder releases holder and then each granted lease in turn, and
// returns the wait ids in the order they were granted, the clock moving by
// step before each release.
func grantOrder(t *testing.T, st *state, now *time.Time, holder string, step time.Duration, n int) []string {
	t.Helper()
	var order []string
	cur := holder
	for i := 0; i < n; i++ {
		*now = now.Add(step)
		fx := &effects{}
		st.release(*now, cur, fx)
		if len(fx.grants) != 1 {
			t.Fatalf("release %d granted %d, want 1", i, len(fx.grants))
		}
		g := fx.grants[0]
		order = append(order, g.w.id)
		st.accept(*now, g.w.id, &effects{})
		cur = g.lease.id
	}
	return order
}

func TestHigherPriorityIsGrantedFirstAndFIFOWithinAPriority(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	h := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "db", "low1", 0)
	queueWaiter(t, st, *now, "db", "high1", 5)
	queueWaiter(t, st, *now, "db", "low2", 0)
	r := queueWaiter(t, st, *now, "db", "high2", 5)
	if r.reply.Position != 2 {
		t.Fatalf("high2 position %d, want 2 (behind high1 only)", r.reply.Position)
	}
	got := grantOrder(t, st, now, h.lease.id, time.Millisecond, 4)
	if fmt.Sprint(got) != "[high1 high2 low1 low2]" {
		t.Fatalf("grant order %v", got)
	}
}

func TestPriorityOutOfRangeIsRefused(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	for _, p := range []int{-1, messages.MaxPriority + 1} {
		r := st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, Priority: p}, messages.JSON, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeInvalidArgument {
			t.Fatalf("priority %d: %+v", p, r.reply)
		}
	}
}

// The aging rule: a waiter's effective priority is its priority plus one
// per aging interval waited, at most MaxPriority; equal effective
// priorities go by arrival. A priority-0 waiter that has waited 9 intervals
// is served before every acquisition queued after it, whatever its priority.
func TestAgingLetsALowPriorityWaiterOvertakeLaterHighPriorityOnes(t *testing.T) {
	st, now := fakeState(t)
	st.aging = 10 * time.Second
	mustCreate(t, st, *now, "db", 1)
	h := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "db", "old-low", 0)
	// 89 s later, a priority-9 waiter arrives: old-low is at 8 still.
	*now = now.Add(89 * time.Second)
	queueWaiter(t, st, *now, "db", "high-a", 9)
	if w := st.waiters["old-low"]; effective(w, *now, st.aging) != 8 {
		t.Fatalf("old-low effective priority %d after 89s, want 8", effective(w, *now, st.aging))
	}
	// At 90 s old-low reaches 9 and arrived first: it goes before high-a.
	*now = now.Add(time.Second)
	queueWaiter(t, st, *now, "db", "high-b", 9)
	got := grantOrder(t, st, now, h.lease.id, 0, 3)
	if fmt.Sprint(got) != "[old-low high-a high-b]" {
		t.Fatalf("grant order %v, want old-low first", got)
	}
}

func TestWithoutAgingTimeAHighPriorityStreamGoesFirst(t *testing.T) {
	st, now := fakeState(t)
	st.aging = 10 * time.Second
	mustCreate(t, st, *now, "db", 1)
	h := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "db", "low", 0)
	*now = now.Add(5 * time.Second)
	queueWaiter(t, st, *now, "db", "high", 1)
	got := grantOrder(t, st, now, h.lease.id, 0, 2)
	if fmt.Sprint(got) != "[high low]" {
		t.Fatalf("grant order %v", got)
	}
}

// A blocked head (it asks for more slots than are free) is overtaken,
// without any release, by an earlier waiter whose aging caught up with it
// at the top priority: a timer looks at the queue again at each aging step.
func TestAgingWakesTheQueueWhenAnEarlierWaiterCatchesUpWithABlockedHead(t *testing.T) {
	st, now := fakeState(t)
	st.aging = 10 * time.Second
	start := *now
	mustCreate(t, st, *now, "db", 3)
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 2})
	b := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "db", "small", 0) // 1 slot, priority 0, first
	*now = start.Add(time.Second)
	r := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 3, WaitID: "big", Notify: "n.big", Priority: 5})
	if r.reply.Position != 1 {
		t.Fatalf("big position %d, want 1", r.reply.Position)
	}
	*now = start.Add(2 * time.Second)
	fx := &effects{}
	st.release(*now, b.lease.id, fx)
	if len(fx.grants) != 0 {
		t.Fatalf("grants %v: big heads and does not fit", fx.grants)
	}
	if at, want := st.wakeAt(*now, "db"), start.Add(10*time.Second); !at.Equal(want) {
		t.Fatalf("wake at %v, want %v (small's next aging step)", at, want)
	}
	// big is capped at 9 from 41 s; small reaches 9 at 90 s and, having
	// arrived first, then heads the queue, and fits.
	*now = start.Add(89 * time.Second)
	st.dispatch(*now, fx, "db")
	if len(fx.grants) != 0 {
		t.Fatalf("grants %v at 89s, want none", fx.grants)
	}
	if at, want := st.wakeAt(*now, "db"), start.Add(90*time.Second); !at.Equal(want) {
		t.Fatalf("wake at %v, want %v", at, want)
	}
	*now = start.Add(90 * time.Second)
	st.dispatch(*now, fx, "db")
	if len(fx.grants) != 1 || fx.grants[0].w.id != "small" {
		t.Fatalf("grants %v at 90s, want small", fx.grants)
	}
}

// A new acquisition that ranks before every waiter (a higher priority) and
// fits is granted at once, not queued behind lower priorities.
func TestAHigherPriorityAcquisitionThatFitsIsGrantedAtOnce(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 3)
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 2})
	big := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 3, WaitID: "big", Notify: "n.big"})
	if big.reply.Status != messages.StatusQueued {
		t.Fatalf("big: %+v", big.reply)
	}
	same := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "same", Notify: "n.same"})
	if same.reply.Status != messages.StatusQueued || same.reply.Position != 2 {
		t.Fatalf("an equal priority overtook big: %+v", same.reply)
	}
	high := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "high", Notify: "n.high", Priority: 3})
	if high.lease == nil {
		t.Fatalf("priority 3 with a free slot was not granted at once: %+v", high.reply)
	}
}

func TestPriorityIsKeptAcrossARestart(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	fx := &effects{}
	st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "n.w", Priority: 7}, messages.JSON, fx)
	st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, WaitID: "w2", Notify: "n.w2", Priority: 7}, messages.JSON, fx)
	var rec waiterRecord
	for _, op := range fx.ops {
		if op.key == waiterKey("w2") {
			mustUnmarshal(t, op.val, &rec)
		}
	}
	if rec.Priority != 7 || rec.waiter().priority != 7 {
		t.Fatalf("stored priority %d, restored %d; want 7", rec.Priority, rec.waiter().priority)
	}
}

// TestAHeadThatAgedIntoPlaceKeepsItsWakeUp: a waiter can become the head
// of a queue by aging alone (PROTOCOL.md §7.5), and then only the timer of
// that moment lets the broker grant it. The Broker recomputes a limit's
// timer (setWaker: wakeAt, then Reset or Stop) whenever a change elsewhere
// asks for it, e.g. a release on another limit of the waiter it overtook.
// When that change is handled at or after the aging moment, before the
// timer has run (two events at once, a timer a little late), wakeAt must
// still ask for a dispatch now: here it answers "no timer", and two
// waiters stay queued for good with every slot they want free.
func TestAHeadThatAgedIntoPlaceKeepsItsWakeUp(t *testing.T) {
	st, now := fakeState(t)
	st.aging = time.Second
	mustCreate(t, st, *now, "c", 1)
	mustCreate(t, st, *now, "b", 1)
	hold := acquireOK(t, st, *now, "b", messages.AcquireRequest{Occupy: 1}) // b is held
	onC := acquireOK(t, st, *now, "c", messages.AcquireRequest{Occupy: 1})  // and c, for now
	// lo (priority 8) waits for c only; hi (priority 9) for c and b, and
	// heads c until lo reaches 9 after one aging step: then lo, the earlier,
	// heads c, with c's slot free.
	queueWaiter(t, st, *now, "c", "lo", 8)
	*now = now.Add(time.Millisecond)
	acquireOK(t, st, *now, "c", messages.AcquireRequest{Names: []string{"b"}, Occupy: 1, Priority: 9, WaitID: "hi", Notify: "_INBOX.c.hi"})
	// c's holder leaves: hi heads c but waits for b.
	st.release(*now, onC.lease.id, &effects{})
	due := st.wakeAt(*now, "c")
	if want := now.Add(time.Second - time.Millisecond); !due.Equal(want) {
		t.Fatalf("c's timer at %v, want %v (lo's aging step)", due, want)
	}
	// b's lease is released just after that moment, before c's timer ran.
	*now = due.Add(time.Millisecond)
	fx := &effects{}
	st.release(*now, hold.lease.id, fx)
	for _, g := range fx.grants {
		t.Logf("granted %s", g.w.id)
	}
	if len(fx.grants) > 0 {
		return
	}
	h := st.limits["c"].queue.head(*now, st.aging)
	at := st.wakeAt(*now, "c")
	if h != nil && st.canGrant(*now, h) && (at.IsZero() || at.After(*now)) {
		t.Fatalf("%s heads c and fits, and hi waits behind it, but the release recomputed c's timer to %v (zero: none): neither is ever granted while c and b stay free", h.id, at)
	}
}
