package broker

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Tests of the rules that keep one client from reaching what is not its own:
// verbs act only within their subject's limit, retries must be the same
// acquisition, queues are bounded per inbox, and numbers cannot wrap.

// A lease taken on one limit cannot be released, renewed or cancelled
// through the subject of another: NATS permissions on the subject are what
// confine a user, so the id alone must not reach across.
func TestLeaseVerbsActOnlyWithinTheSubjectsLimit(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	mustCreate(t, st, *now, "other", 1)
	victim := acquireOK(t, st, *now, "other", messages.AcquireRequest{Occupy: 1, WaitID: "v1"}).lease
	if r := st.releaseOn(*now, "db", victim.id, &effects{}); r.Error == nil || r.Error.Code != messages.CodeForbidden || r.Released {
		t.Fatalf("release through db: %+v, want forbidden", r)
	}
	if r := st.renewOn(*now, "db", victim.id, 1000, &effects{}); r.Error == nil || r.Error.Code != messages.CodeForbidden {
		t.Fatalf("renew through db: %+v, want forbidden", r)
	}
	if r := st.cancelOn(*now, "db", "v1", &effects{}); r.Error == nil || r.Error.Code != messages.CodeForbidden {
		t.Fatalf("cancel through db: %+v, want forbidden", r)
	}
	if st.leases[victim.id] == nil || victim.ttl != 10*time.Second {
		t.Fatalf("the victim's lease changed: %+v", victim)
	}
	if r := st.releaseOn(*now, "other", victim.id, &effects{}); !r.Released {
		t.Fatalf("release through its own limit: %+v", r)
	}
}

// A waiter of a multi-limit acquisition can be cancelled through any of
// the limits it named, and through no other.
func TestWaitScopeIsTheNamedLimits(t *testing.T) {
	st, now := fakeState(t)
	for _, n := range []string{"a", "b", "c"} {
		mustCreate(t, st, *now, n, 1)
	}
	acquireOK(t, st, *now, "a", messages.AcquireRequest{Occupy: 1})
	q := acquireOK(t, st, *now, "a", messages.AcquireRequest{Names: []string{"b"}, Occupy: 1, WaitID: "w", Notify: "i.x.w"})
	if q.reply.Status != messages.StatusQueued {
		t.Fatalf("not queued: %+v", q.reply)
	}
	if r := st.cancelOn(*now, "c", "w", &effects{}); r.Error == nil || r.Error.Code != messages.CodeForbidden {
		t.Fatalf("cancel through c: %+v", r)
	}
	if r := st.cancelOn(*now, "b", "w", &effects{}); !r.Cancelled {
		t.Fatalf("cancel through b: %+v", r)
	}
}

// A request that reuses a known wait id with another grant key (or other
// limits) is refused: wait ids are visible to anyone who may inspect the
// limit, and the retry answer would hand over the acquisition's lease.
func TestRetryMustCarryTheSameKeyAndLimits(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	mustCreate(t, st, *now, "other", 1)
	key := "KEY0123456789ABCDEF"
	first := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "w1", Key: key})
	if first.lease == nil {
		t.Fatal("not granted")
	}
	thief := st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, WaitID: "w1", Key: "OTHERKEY0123456789"}, messages.Msgpack, &effects{})
	if thief.reply.Error == nil || thief.reply.Error.Code != messages.CodeForbidden || thief.reply.Lease != nil {
		t.Fatalf("retry with another key: %+v", thief.reply)
	}
	elsewhere := st.acquire(*now, "other", &messages.AcquireRequest{Occupy: 1, WaitID: "w1", Key: key}, messages.Msgpack, &effects{})
	if elsewhere.reply.Error == nil || elsewhere.reply.Lease != nil {
		t.Fatalf("retry on another limit: %+v", elsewhere.reply)
	}
	again := st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, WaitID: "w1", Key: key}, messages.Msgpack, &effects{})
	if again.reply.Lease == nil || again.reply.Lease.ID != first.lease.id {
		t.Fatalf("a true retry: %+v", again.reply)
	}
}

// One inbox may queue only so many waiters; another inbox still queues.
func TestWaitersAreBoundedPerInbox(t *testing.T) {
	st, now := fakeState(t)
	st.maxPerInbox, st.maxWaiters = 3, 5
	mustCreate(t, st, *now, "db", 1)
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	queue := func(inbox string, i int) messages.AcquireReply {
		return st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, WaitID: fmt.Sprintf("%s%d", inbox, i),
			Notify: "_INBOX." + inbox + ".w" + fmt.Sprint(i)}, messages.Msgpack, &effects{}).reply
	}
	for i := range 3 {
		if r := queue("a", i); r.Status != messages.StatusQueued {
			t.Fatalf("waiter %d of a: %+v", i, r)
		}
	}
	if r := queue("a", 3); r.Error == nil || r.Error.Code != messages.CodeTooManyWaiters {
		t.Fatalf("4th waiter of a: %+v, want too_many_waiters", r)
	}
	for i := range 2 {
		if r := queue("b", i); r.Status != messages.StatusQueued {
			t.Fatalf("waiter %d of b: %+v", i, r)
		}
	}
	if r := queue("c", 0); r.Error == nil || r.Error.Code != messages.CodeTooManyWaiters {
		t.Fatalf("6th waiter of the broker: %+v, want too_many_waiters", r)
	}
	st.cancelOn(*now, "db", "a0", &effects{})
	if r := queue("a", 4); r.Status != messages.StatusQueued {
		t.Fatalf("after a cancel, a queues again: %+v", r)
	}
}

// An inbox that leaves maxStrikes grants in a row unanswered loses its
// other waiters, so that it stalls the queue for at most that many grant
// timeouts; an answered grant clears its strikes.
func TestUnansweredGrantsDropTheInboxsOtherWaiters(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1})
	for i := range 5 {
		acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: fmt.Sprintf("bad%d", i), Notify: fmt.Sprintf("_INBOX.bad.w%d", i)})
	}
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "good", Notify: "_INBOX.good.w"})
	if n := st.grantUnanswered(*now, &waiter{notify: "_INBOX.bad.w0"}, &effects{}); n != 0 {
		t.Fatalf("first strike dropped %d", n)
	}
	st.grantAnswered(&waiter{notify: "_INBOX.bad.w1"})
	if n := st.grantUnanswered(*now, &waiter{notify: "_INBOX.bad.w1"}, &effects{}); n != 0 {
		t.Fatalf("an answer must clear the strikes; dropped %d", n)
	}
	fx := &effects{}
	if n := st.grantUnanswered(*now, &waiter{notify: "_INBOX.bad.w2"}, fx); n != 5 {
		t.Fatalf("second strike in a row dropped %d, want 5", n)
	}
	if len(fx.fails) != 5 || st.waiters["good"] == nil || len(st.waiters) != 1 {
		t.Fatalf("fails %d, waiters %v: want the bad inbox's 5 failed and good kept", len(fx.fails), st.waiters)
	}
}

// Numbers that would wrap around or overflow a duration are refused.
func TestNumbersOutOfRangeAreRefused(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 5)
	for _, ms := range []int64{-1, math.MaxInt64, math.MaxInt64/int64(time.Millisecond) + 1, 9223372036855, 3_600_001} {
		r := st.acquire(*now, "db", &messages.AcquireRequest{Occupy: 1, TTLMillis: ms}, messages.Msgpack, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeInvalidArgument || r.lease != nil {
			t.Errorf("ttl_ms %d: %+v, want invalid_argument", ms, r.reply)
		}
	}
	for _, occupy := range []int{0, -1, messages.MaxLimit + 1, math.MaxInt} {
		r := st.acquire(*now, "missing", &messages.AcquireRequest{Occupy: occupy}, messages.Msgpack, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeInvalidOccupy {
			t.Errorf("occupy %d: %+v, want invalid_occupy", occupy, r.reply)
		}
	}
	bad := []messages.CreateRequest{
		{Limit: -1}, {Limit: messages.MaxLimit + 1}, {Limit: 10, SlotDecayPerSecond: 1e-300},
		{Limit: 10, SlotDecayPerSecond: math.NaN()}, {Limit: 10, SlotDecayPerSecond: math.Inf(1)}, {Limit: 10, SlotDecayPerSecond: 1e7},
		{Limit: messages.MaxLimit, SlotDecayPerSecond: 0.1},
	}
	for _, c := range bad {
		if r := st.create(*now, "x", &c, &effects{}); r.Error == nil || r.Error.Code != messages.CodeInvalidArgument {
			t.Errorf("create %+v: %+v, want invalid_argument", c, r)
		}
	}
	tiny := 1e-300
	if r := st.update(*now, "db", &messages.UpdateRequest{SlotDecayPerSecond: &tiny}, &effects{}); r.Error == nil {
		t.Errorf("update to decay 1e-300 accepted")
	}
}

// A rate limit at the slowest decay allowed still refuses the admission
// past its limit: no duration computed from its numbers wraps around.
func TestSlowestDecayStillEnforcesTheLimit(t *testing.T) {
	st, now := fakeState(t)
	limit := 1000
	decay := float64(limit) / messages.MaxDrain.Seconds()
	if r := st.create(*now, "r", &messages.CreateRequest{Limit: limit, SlotDecayPerSecond: decay}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
	r := st.acquire(*now, "r", &messages.AcquireRequest{Occupy: limit, Rate: true, Try: true}, messages.Msgpack, &effects{})
	if r.reply.Error != nil {
		t.Fatalf("first full admission: %v", r.reply.Error)
	}
	r = st.acquire(now.Add(time.Hour), "r", &messages.AcquireRequest{Occupy: 1, Rate: true, Try: true}, messages.Msgpack, &effects{})
	if r.reply.Error == nil || r.reply.Error.Code != messages.CodeNoSlots {
		t.Fatalf("admission past the limit an hour later: %+v, want no_slots", r.reply)
	}
}
