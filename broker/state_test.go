package broker

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// fakeState is a state with a deterministic id generator and a fake clock.
func fakeState(t *testing.T) (*state, *time.Time) {
	t.Helper()
	n := 0
	st := newState(ttlBounds{def: 10 * time.Second, min: time.Second, max: time.Hour}, func() string {
		n++
		return fmt.Sprintf("id%d", n)
	})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return st, &now
}

func mustCreate(t *testing.T, st *state, now time.Time, name string, limit int) {
	t.Helper()
	if r := st.create(now, name, &messages.CreateRequest{Limit: limit}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
}

func acquireOK(t *testing.T, st *state, now time.Time, name string, req messages.AcquireRequest) acquireResult {
	t.Helper()
	res := st.acquire(now, name, &req, messages.Msgpack, &effects{})
	if res.reply.Error != nil {
		t.Fatalf("acquire %s: %v", name, res.reply.Error)
	}
	return res
}

func TestStateFIFOAndLargeRequestNotStarved(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 4)
	h := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 3})
	if h.lease == nil {
		t.Fatal("first acquire not granted")
	}
	big := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 4, WaitID: "big", Notify: "n.big"})
	if big.reply.Status != messages.StatusQueued || big.reply.Position != 1 {
		t.Fatalf("big: %+v", big.reply)
	}
	small := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "small", Notify: "n.small"})
	if small.reply.Status != messages.StatusQueued || small.reply.Position != 2 {
		t.Fatalf("small overtook the big request: %+v", small.reply)
	}
	fx := &effects{}
	st.release(*now, h.lease.id, fx)
	if len(fx.grants) != 1 || fx.grants[0].w.id != "big" {
		t.Fatalf("grants after release = %v, want big only", fx.grants)
	}
	if got := st.limits["db"].held; got != 4 {
		t.Fatalf("held = %d, want 4", got)
	}
}

func TestStateMultiLimitAllOrNothing(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "a", 1)
	mustCreate(t, st, *now, "b", 1)
	hb := acquireOK(t, st, *now, "b", messages.AcquireRequest{Occupy: 1})
	ab := acquireOK(t, st, *now, "a", messages.AcquireRequest{Occupy: 1, Names: []string{"b"}, WaitID: "ab", Notify: "n.ab"})
	if ab.reply.Status != messages.StatusQueued {
		t.Fatalf("[a,b] granted while b is full: %+v", ab.reply)
	}
	if held := st.limits["a"].held; held != 0 {
		t.Fatalf("a holds %d while [a,b] waits: partial hold", held)
	}
	// [b,a] queues behind [a,b] in both queues: no cycle.
	ba := acquireOK(t, st, *now, "b", messages.AcquireRequest{Occupy: 1, Names: []string{"a"}, WaitID: "ba", Notify: "n.ba"})
	if ba.reply.Status != messages.StatusQueued {
		t.Fatalf("[b,a]: %+v", ba.reply)
	}
	fx := &effects{}
	st.release(*now, hb.lease.id, fx)
	if len(fx.grants) != 1 || fx.grants[0].w.id != "ab" {
		t.Fatalf("grants = %v, want ab", fx.grants)
	}
	fx = &effects{}
	st.accept(*now, "ab", fx)
	st.release(*now, fx0(st, "ab").id, fx)
	if len(fx.grants) != 1 || fx.grants[0].w.id != "ba" {
		t.Fatalf("grants = %v, want ba", fx.grants)
	}
}

// fx0 finds the lease of a wait id.
func fx0(st *state, waitID string) *lease { return st.byWait[waitID] }

func TestStateDispatchTouchesOnlyTheHead(t *testing.T) {
	for _, n := range []int{10, 10000} {
		st, now := fakeState(t)
		mustCreate(t, st, *now, "q", 1)
		h := acquireOK(t, st, *now, "q", messages.AcquireRequest{Occupy: 1})
		for i := 0; i < n; i++ {
			acquireOK(t, st, *now, "q", messages.AcquireRequest{Occupy: 1, WaitID: fmt.Sprintf("w%d", i), Notify: "n"})
		}
		fx := &effects{}
		st.release(*now, h.lease.id, fx)
		// One purge of the old lease, one put of the new: independent of n.
		if len(fx.ops) != 2 || len(fx.grants) != 1 {
			t.Fatalf("n=%d: %d writes and %d grants per release, want 2 and 1", n, len(fx.ops), len(fx.grants))
		}
	}
}

func TestStateCancelAndRefuseFreeSlots(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "x", 1)
	h := acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1})
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1, WaitID: "w1", Notify: "n"})
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1, WaitID: "w2", Notify: "n"})
	st.release(*now, h.lease.id, &effects{})
	// w1 was granted but declines (its caller gave up): w2 gets the slot.
	fx := &effects{}
	st.refuse(*now, "w1", fx)
	if len(fx.grants) != 1 || fx.grants[0].w.id != "w2" {
		t.Fatalf("after refuse grants = %v, want w2", fx.grants)
	}
	// w2 cancels after its grant: the broker releases that lease.
	r := st.cancel(*now, "w2", &effects{})
	if r.Lease == nil {
		t.Fatal("cancel of a granted wait did not return its lease")
	}
	if held := st.limits["x"].held; held != 0 {
		t.Fatalf("held = %d after refuse and cancel, want 0", held)
	}
}

func TestStateExpiryAtDeadline(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "x", 1)
	h := acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1, TTLMillis: 2000})
	if st.expire(now.Add(1999*time.Millisecond), h.lease.id, &effects{}) {
		t.Fatal("expired before its deadline")
	}
	st.renew(now.Add(1500*time.Millisecond), h.lease.id, 0, &effects{})
	if st.expire(now.Add(3000*time.Millisecond), h.lease.id, &effects{}) {
		t.Fatal("expired before the renewed deadline")
	}
	if !st.expire(now.Add(3500*time.Millisecond), h.lease.id, &effects{}) {
		t.Fatal("not expired at the renewed deadline")
	}
	if r := st.renew(now.Add(4*time.Second), h.lease.id, 0, &effects{}); r.Error == nil || r.Error.Code != messages.CodeLeaseNotFound {
		t.Fatalf("renew after expiry = %+v, want lease_not_found", r.Error)
	}
}

func TestStateDisableGrantsWaiters(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "x", 1)
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1})
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "n"})
	off := false
	fx := &effects{}
	if r := st.update(*now, "x", &messages.UpdateRequest{Active: &off}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	if len(fx.grants) != 1 {
		t.Fatalf("disabling did not release the waiter: grants = %v", fx.grants)
	}
	if st.limits["x"].queue.Len() != 0 {
		t.Fatal("queue not empty after disable")
	}
}

// hasAvailable finds the slot-available event of a limit in fx.
func hasAvailable(fx *effects, name string) (int, bool) {
	for _, ev := range fx.events {
		if ev.Kind == messages.EventAvailable && ev.Limit == name {
			return ev.Available, true
		}
	}
	return 0, false
}

func TestStateAvailableAfterCancelAndRaise(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "x", 2)
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 1})
	acquireOK(t, st, *now, "x", messages.AcquireRequest{Occupy: 2, WaitID: "big", Notify: "n"})
	fx := &effects{}
	st.cancel(*now, "big", fx)
	if n, ok := hasAvailable(fx, "x"); !ok || n != 1 {
		t.Fatalf("cancel of the blocking waiter: available event %v (%d), want 1 free", ok, n)
	}
	fx = &effects{}
	if r := st.update(*now, "x", &messages.UpdateRequest{Limit: ptr(4)}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	if n, ok := hasAvailable(fx, "x"); !ok || n != 3 {
		t.Fatalf("raised limit: available event %v (%d), want 3 free", ok, n)
	}
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// A pending lease's record carries a deadline that covers its acceptance
// within the slack, so an acceptance in time writes only the waiter's purge;
// a later one stores the real deadline.
func TestStateAcceptWithinSlackRewritesNothing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		acceptIn  time.Duration
		wantWrite bool
	}{{"in time", 2 * time.Second, false}, {"late", 4 * time.Second, true}} {
		t.Run(tc.name, func(t *testing.T) {
			st, now := fakeState(t)
			st.acceptSlack = 3 * time.Second
			mustCreate(t, st, *now, "db", 1)
			h := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
			acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "n.w"})
			fx := &effects{}
			st.release(*now, h.lease.id, fx)
			l := st.byWait["w"]
			if l == nil || !l.pending {
				t.Fatalf("w not granted a pending lease: %+v", l)
			}
			var stored leaseRecord
			for _, op := range fx.ops {
				if op.key == leaseKey(l.id) {
					mustUnmarshal(t, op.val, &stored)
				}
			}
			if want := now.Add(l.ttl + 3*time.Second); !stored.ExpiresAt.Equal(want) {
				t.Fatalf("pending lease stored until %v, want grant + ttl + slack = %v", stored.ExpiresAt, want)
			}
			if !l.expires.Equal(now.Add(l.ttl)) {
				t.Fatalf("pending lease expires %v in memory, want grant + ttl", l.expires)
			}

			at := now.Add(tc.acceptIn)
			fx = &effects{}
			st.accept(at, "w", fx)
			var wrote bool
			var purged bool
			for _, op := range fx.ops {
				switch op.key {
				case leaseKey(l.id):
					wrote = true
					var r leaseRecord
					mustUnmarshal(t, op.val, &r)
					if !r.ExpiresAt.Equal(at.Add(l.ttl)) {
						t.Fatalf("rewritten deadline %v, want acceptance + ttl %v", r.ExpiresAt, at.Add(l.ttl))
					}
				case waiterKey("w"):
					purged = op.val == nil
				}
			}
			if wrote != tc.wantWrite || !purged {
				t.Fatalf("accept after %v: lease rewritten %v (want %v), wait record purged %v (want true)", tc.acceptIn, wrote, tc.wantWrite, purged)
			}
			if l.pending || !l.expires.Equal(at.Add(l.ttl)) {
				t.Fatalf("after accept: pending %v, expires %v, want false and %v", l.pending, l.expires, at.Add(l.ttl))
			}
		})
	}
}

func mustUnmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// A counted rate try admits as many as fit now, in one change, and a retry
// of it is answered with the same count instead of admitting again.
func TestStateCountedRateTry(t *testing.T) {
	st, now := fakeState(t)
	fx := &effects{}
	if r := st.create(*now, "r", &messages.CreateRequest{Limit: 5, SlotDecayPerSecond: 1}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	try := func(count, occupy int, waitID string) messages.AcquireReply {
		fx := &effects{}
		return st.acquire(*now, "r", &messages.AcquireRequest{Occupy: occupy, Rate: true, Try: true, Count: count, WaitID: waitID}, messages.Msgpack, fx).reply
	}
	if r := try(3, 2, "a"); r.Error != nil || r.Admitted != 2 {
		t.Fatalf("3 × 2 slots of 5: %+v, want 2 admitted", r)
	}
	if r := try(3, 2, "a"); r.Error != nil || r.Admitted != 2 {
		t.Fatalf("retry of a: %+v, want the same 2 admitted", r)
	}
	if got := st.limits["r"].activeSlots(*now); got != 4 {
		t.Fatalf("active slots %d after 2 admissions of 2, want 4 (the retry admitted again?)", got)
	}
	if r := try(4, 1, "b"); r.Error != nil || r.Admitted != 1 {
		t.Fatalf("4 × 1 slot with 1 free: %+v, want 1 admitted", r)
	}
	if r := try(2, 1, "c"); r.Error == nil || r.Error.Code != messages.CodeNoSlots {
		t.Fatalf("counted try on a full limit: %+v, want no_slots", r)
	}
	*now = now.Add(3 * time.Second) // 3 slots decayed
	if r := try(10, 1, "d"); r.Error != nil || r.Admitted != 3 {
		t.Fatalf("10 × 1 slot after 3 decayed: %+v, want 3 admitted", r)
	}
	for _, bad := range []messages.AcquireRequest{
		{Occupy: 1, Rate: true, Count: 2},                                // not try
		{Occupy: 1, Try: true, Count: 2},                                 // not rate
		{Occupy: 1, Rate: true, Try: true, Count: -1},                    // negative
		{Occupy: 1, Rate: true, Try: true, Count: messages.MaxCount + 1}, // too many
	} {
		r := st.acquire(*now, "r", &bad, messages.Msgpack, &effects{}).reply
		if r.Error == nil || r.Error.Code != messages.CodeInvalidArgument {
			t.Errorf("%+v: %+v, want invalid_argument", bad, r)
		}
	}
}
