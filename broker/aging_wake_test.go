package broker

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

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
