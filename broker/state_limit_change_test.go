package broker

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// TestLowerLimitFailsEveryTooLargeWaiter: lowering a limit must fail
// every waiter whose occupy exceeds it, even when failing one lets the next
// (small) waiter be granted meanwhile.
func TestLowerLimitFailsEveryTooLargeWaiter(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 5)
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 2})
	for _, q := range []struct {
		id     string
		occupy int
	}{{"w1", 4}, {"w2", 1}, {"w3", 4}, {"w4", 1}} {
		r := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: q.occupy, WaitID: q.id, Notify: "n." + q.id})
		if r.reply.Status != messages.StatusQueued {
			t.Fatalf("%s: %+v", q.id, r.reply)
		}
	}
	three := 3
	fx := &effects{}
	if r := st.update(*now, "db", &messages.UpdateRequest{Limit: &three}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	failed := map[string]bool{}
	for _, f := range fx.fails {
		failed[f.w.id] = true
	}
	if !failed["w1"] || !failed["w3"] {
		t.Fatalf("failed = %v, want w1 and w3 failed (occupy 4 > limit 3)", failed)
	}
	if w := st.waiters["w3"]; w != nil {
		t.Fatalf("w3 (occupy 4 > limit 3) is still queued and blocks the queue forever")
	}
}

// TestDeleteLimitWithMultiLimitWaiters: deleting a limit whose queue
// holds several waiters that also wait on another limit must not panic.
func TestDeleteLimitWithMultiLimitWaiters(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "x", 1)
	mustCreate(t, st, *now, "y", 5)
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1})
	for _, id := range []string{"w1", "w2"} {
		r := acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1, Names: []string{"y"}, WaitID: id, Notify: "n." + id})
		if r.reply.Status != messages.StatusQueued {
			t.Fatalf("%s: %+v", id, r.reply)
		}
	}
	fx := &effects{}
	if r := st.remove(*now, "x", fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	if len(fx.fails) != 2 || len(fx.grants) != 0 {
		t.Fatalf("fails = %d, grants = %d; want both waiters failed, none granted", len(fx.fails), len(fx.grants))
	}
	if h := st.limits["y"].held; h != 0 {
		t.Fatalf("y held = %d, want 0", h)
	}
}

// TestDeclinedRateGrantAfterRecreate: a rate admission pushed before
// its limit was deleted must not, when declined, take slots out of the
// bucket of a new limit created with the same name (over-admission).
func TestDeclinedRateGrantAfterRecreate(t *testing.T) {
	sim := newRateSim(t)
	sim.create("x", 2, 1)
	wantGranted(t, sim.rate("x", 2, true))
	req := &messages.AcquireRequest{Occupy: 1, Rate: true, WaitID: "w", Notify: "n.w"}
	fx := &effects{}
	if r := sim.st.acquire(sim.now, "x", req, messages.Msgpack, fx); r.reply.Status != messages.StatusQueued {
		t.Fatalf("w: %+v", r.reply)
	}
	sim.now = sim.now.Add(time.Second)
	fx = &effects{}
	sim.st.dispatch(sim.now, fx, "x") // w is admitted and pushed; not answered yet
	if len(fx.grants) != 1 {
		t.Fatalf("grants = %d, want 1", len(fx.grants))
	}
	sim.st.remove(sim.now, "x", &effects{})
	sim.create("x", 2, 1)
	wantGranted(t, sim.rate("x", 2, false))
	sim.st.refuse(sim.now, "w", &effects{}) // w declines its grant on the old x
	if r := sim.rate("x", 1, false); r.Error == nil {
		t.Fatalf("a third slot was admitted on the new x (limit 2): the declined grant of the deleted x freed one")
	}
}
