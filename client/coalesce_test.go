package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// awaitTryCallsWaiting polls until n TryRateLimit calls of c wait behind
// the one in flight (the coalescer has no hook to tell it).
func awaitTryCallsWaiting(t *testing.T, ctx context.Context, c *client.Client, n int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for client.TryCallsWaiting(c) != n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%d TryRateLimit calls waiting, want %d", client.TryCallsWaiting(c), n)
		}
	}
}

// TestCoalescedTryRateLimitKeepsItsPriority: TryRateLimit calls with
// WithPriority that go together in one counted request must be sent at
// their priority. A try is admitted while others queue only when it ranks
// before every waiter (PROTOCOL.md §7.5, immediate grant): sent at priority
// 0, a priority-9 call that a lone request would have admitted is refused
// with ErrNoSlots only because other calls came at the same time.
func TestCoalescedTryRateLimitKeepsItsPriority(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	reqs := standIn(t, connect(t, s), "slotbroker.v1.acquire.>")
	ctx := testContext(t)
	const behind = 3
	errs := make(chan error, behind+1)
	go func() { errs <- c.TryRateLimit(ctx, "api", 1, client.WithPriority(9)) }()
	first := next(t, reqs, "the first try")
	for range behind {
		go func() { errs <- c.TryRateLimit(ctx, "api", 1, client.WithPriority(9)) }()
	}
	awaitTryCallsWaiting(t, ctx, c, behind)
	var req messages.AcquireRequest
	decode(t, first, &req)
	if req.Priority != 9 {
		t.Fatalf("the lone try went at priority %d, want 9", req.Priority)
	}
	respond(t, first, messages.AcquireReply{Status: messages.StatusGranted})
	counted := next(t, reqs, "the counted try of the calls behind it")
	req = messages.AcquireRequest{}
	decode(t, counted, &req)
	respond(t, counted, messages.AcquireReply{Status: messages.StatusGranted, Admitted: max(req.Count, 1)})
	for range behind + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if req.Count != behind || req.Priority != 9 {
		t.Fatalf("the counted try of %d TryRateLimit calls at priority 9 went with count %d at priority %d", behind, req.Count, req.Priority)
	}
}

// TestCoalescedRateLimitProbeKeepsItsPriority: RateLimit calls at a
// priority that wait behind one in flight go first as one counted try
// (a probe): it must carry their priority too, or it is refused wherever
// a waiter is queued and every call then takes a blocking turn of its own.
func TestCoalescedRateLimitProbeKeepsItsPriority(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	reqs := standIn(t, connect(t, s), "slotbroker.v1.acquire.>")
	ctx := testContext(t)
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	const behind = 3
	errs := make(chan error, behind+1)
	for range behind + 1 {
		go func() { errs <- c.RateLimit(ctx, "api", 1, client.WithPriority(9)) }()
		<-registered
	}
	first := next(t, reqs, "the first RateLimit request")
	respond(t, first, messages.AcquireReply{Status: messages.StatusGranted})
	probe := next(t, reqs, "the counted try of the calls behind it")
	var req messages.AcquireRequest
	decode(t, probe, &req)
	respond(t, probe, messages.AcquireReply{Status: messages.StatusGranted, Admitted: max(req.Count, 1)})
	for range behind + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !req.Try || req.Priority != 9 {
		t.Fatalf("the counted try of RateLimit calls at priority 9 went (try %v) at priority %d", req.Try, req.Priority)
	}
}
