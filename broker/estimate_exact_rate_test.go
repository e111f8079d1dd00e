package broker

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

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
