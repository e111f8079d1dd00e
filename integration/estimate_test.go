package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestEstimateOfTheWait: a queued acquisition is told its position and
// the broker's estimate of its wait (WithQueueUpdates), which slotctl run
// prints while it waits and slotctl inspect shows: none before any hold of
// the limit has ended, one from hold times after, and on a rate limit the
// bucket's exact arithmetic.
func TestEstimateOfTheWait(t *testing.T) {
	x := newCLIEnv(t)
	t.Run("Holds", x.testEstimateFromHolds)
	t.Run("Rate", x.testEstimateOnRateLimit)
	t.Run("RunAndInspect", x.testEstimateShownBySlotctl)
}

// queueUpdates is a WithQueueUpdates option sending each answer to ch.
func queueUpdates(ch chan<- client.Queued) client.AcquireOption {
	return client.WithQueueUpdates(func(q client.Queued) { ch <- q })
}

// waitQueued acquires name in the background until ctx ends, and returns
// what WithQueued is told when it waits: its position and estimate.
func waitQueued(t *testing.T, ctx context.Context, c *client.Client, name string, rate bool) client.Queued {
	t.Helper()
	ch := make(chan client.Queued, 8)
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		queued := client.WithQueued(func(q client.Queued) { ch <- q })
		if rate {
			_ = c.RateLimit(ctx, name, 1, queued)
			return
		}
		if l, err := c.Acquire(ctx, name, 1, queued); err == nil {
			_ = l.Release(context.Background())
		}
	}()
	return coreRecv(t, ch, "the queued answer on "+name)
}

func (x *cliEnv) testEstimateFromHolds(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, x.c, "est-db", 1)
	held, err := x.c.Acquire(ctx, "est-db", 1)
	if err != nil {
		t.Fatal(err)
	}
	// No hold of est-db has ended: no estimate (unknown, not 0).
	wctx, cancel := context.WithCancel(ctx)
	q := waitQueued(t, wctx, x.c, "est-db", false)
	cancel()
	if q.Position != 1 || q.EstimateKnown {
		t.Fatalf("queued before any hold ended: %+v, want position 1 and no estimate", q)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the cancelled wait to be gone", func() bool {
		info := coreInfo(t, x.c, "est-db")
		return info.WaitersTotal == 0 && info.HoldersTotal == 0
	})
	// One hold has ended: the next waiter is told an estimate from it.
	if held, err = x.c.Acquire(ctx, "est-db", 1); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Release(ctx) }()
	wctx, cancel = context.WithCancel(ctx)
	defer cancel()
	q = waitQueued(t, wctx, x.c, "est-db", false)
	if q.Position != 1 || !q.EstimateKnown || q.Exact || q.Samples < 1 || q.Estimate < 0 {
		t.Fatalf("queued after a hold ended: %+v, want position 1 and an estimate from hold times", q)
	}
}

// testEstimateOnRateLimit: a slot decays every 20 s, so the waiters stay
// queued; each is told the bucket's arithmetic, and inspect's estimates
// of two waiters in a row are exactly one slot's decay apart.
func (x *cliEnv) testEstimateOnRateLimit(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, x.c, "est-rate", 1, client.WithSlotDecay(0.05))
	if err := x.c.TryRateLimit(ctx, "est-rate", 1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	first := waitQueued(t, wctx, x.c, "est-rate", true)
	second := waitQueued(t, wctx, x.c, "est-rate", true)
	for i, q := range []client.Queued{first, second} {
		if q.Position != i+1 || !q.EstimateKnown || !q.Exact || q.Estimate > time.Duration(i+1)*20*time.Second {
			t.Fatalf("waiter %d: %+v, want position %d and an exact estimate of at most %ds", i+1, q, i+1, (i+1)*20)
		}
	}
	info := cliDecode[client.LimitInfo](t, x.slotctl(t, "inspect", "est-rate", "--json").ok(t).stdout)
	if len(info.Waiters) != 2 {
		t.Fatalf("inspect --json lists %d waiters, want 2", len(info.Waiters))
	}
	e1, e2 := info.Waiters[0].Estimate, info.Waiters[1].Estimate
	if e1 == nil || e2 == nil || e1.Basis != messages.EstimateRate || e2.Basis != messages.EstimateRate || e2.Millis-e1.Millis != 20000 {
		t.Fatalf("inspect --json estimates %+v and %+v: want basis rate, 20000 ms apart", e1, e2)
	}
	if out := x.slotctl(t, "inspect", "est-rate").ok(t).stdout; !strings.Contains(strings.ToLower(out), "estimate") || strings.Count(out, "exactly ") != 2 {
		t.Fatalf("inspect shows no exact estimates:\n%s", out)
	}
}

// testEstimateShownBySlotctl: slotctl run says where it stands while it
// waits, with the estimate, and inspect shows the waiter's priority and
// estimate.
func (x *cliEnv) testEstimateShownBySlotctl(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, x.c, "est-run", 1)
	l, err := x.c.Acquire(ctx, "est-run", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil { // one hold ended
		t.Fatal(err)
	}
	held, err := x.c.Acquire(ctx, "est-run", 1)
	if err != nil {
		t.Fatal(err)
	}
	run := x.command("run", "est-run", "--", "true")
	stderr, err := run.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	lines := cliLines(stderr)
	line := cliAwaitLine(t, lines, 30*time.Second, "run's waiting message", func(l string) bool { return strings.Contains(l, "position 1") })
	if !strings.Contains(line, "position 1 in the queue, ") || !strings.Contains(line, "(from 1 recent hold)") {
		t.Fatalf("waiting message %q: want the position and an estimate from 1 recent hold", line)
	}
	t.Logf("slotctl run said: %s", line)

	out := x.slotctl(t, "inspect", "est-run").ok(t).stdout
	if lower := strings.ToLower(out); !strings.Contains(lower, "priority") || !strings.Contains(lower, "estimate") || !strings.Contains(out, "(1 hold)") {
		t.Fatalf("inspect shows no priority and estimate for the waiter:\n%s", out)
	}
	info := cliDecode[client.LimitInfo](t, x.slotctl(t, "inspect", "est-run", "--json").ok(t).stdout)
	if len(info.Waiters) != 1 || info.Waiters[0].Estimate == nil || info.Waiters[0].Estimate.Basis != messages.EstimateHolds ||
		info.Waiters[0].Estimate.Samples != 1 {
		t.Fatalf("inspect --json waiters %+v: want one with an estimate from 1 hold", info.Waiters)
	}

	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	if err := run.Wait(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestEstimateToldAgainAtEachResend: the client sends a waiting
// acquisition again when its connection is back (and every 30 s), and
// WithQueueUpdates is told each answer, with the estimate of then.
func TestEstimateToldAgainAtEachResend(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	c := ev.e.Client
	coreLimit(t, c, "est-again", 1)
	l, err := c.Acquire(ctx, "est-again", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil { // one hold ended
		t.Fatal(err)
	}
	held, err := c.Acquire(ctx, "est-again", 1)
	if err != nil {
		t.Fatal(err)
	}
	br, nc, waiter := clientThroughBridge(t, ev)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan client.Queued, 8)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		if l, err := waiter.Acquire(wctx, "est-again", 1, queueUpdates(ch)); err == nil {
			_ = l.Release(context.Background())
		}
	}()
	first := coreRecv(t, ch, "the first queued answer")
	br.Cut()
	eventually(t, 10*time.Second, "the waiter's connection down", func() bool { return !nc.IsConnected() })
	br.Restore()
	again := coreRecv(t, ch, "the queued answer to the acquisition sent again")
	for _, q := range []client.Queued{first, again} {
		if q.Position != 1 || !q.EstimateKnown || q.Samples != 1 {
			t.Fatalf("answers %+v then %+v: want position 1 with an estimate from 1 hold, each time", first, again)
		}
	}
	if !again.At.After(first.At) {
		t.Fatalf("the second answer (%v) is not later than the first (%v)", again.At, first.At)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
