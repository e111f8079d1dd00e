package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// rvQuietClient is a Client on its own connection that drops the expected
// warnings (a wait that could not be withdrawn while no broker answers).
func rvQuietClient(t *testing.T, e *brokertest.Embedded, opts ...client.Option) (*client.Client, *nats.Conn) {
	t.Helper()
	return newClient(t, e, append(opts, client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))...)
}

// rvStopBroker stops the embedded broker; the NATS server stays up, so
// requests meet no responders and the client retries them. (Errors do not
// stop the test: it also runs in a rate call hook, on a call's goroutine.)
func rvStopBroker(t *testing.T, e *brokertest.Embedded) {
	t.Helper()
	if err := e.Broker.Stop(); err != nil {
		t.Errorf("stop broker: %v", err)
	}
}

// rvStartBroker starts a new broker on the embedded connection and store.
func rvStartBroker(t *testing.T, e *brokertest.Embedded) {
	t.Helper()
	b, err := broker.New(e.Conn)
	if err != nil {
		t.Errorf("new broker: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Errorf("start broker: %v", err)
		return
	}
	e.Broker = b
}

// TestCoalescedRateLimitTimeoutWhileBatchTryRetries: a RateLimit call that waited
// behind the Client's leader is taken into the next counted try. While that
// try gets no answer (broker restarting), the call's WithTimeout must still
// end its wait, with ErrTimeout, as it does for a lone RateLimit or Acquire
// (TestTimeoutDuringOutage). Another caller of the batch with a long
// context must not hold it.
func TestCoalescedRateLimitTimeoutWhileBatchTryRetries(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "hang", 100, client.WithSlotDecay(1)); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e)
	defer rvStartBroker(t, e) // for the embedded broker's cleanup

	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	var wg sync.WaitGroup
	defer wg.Wait()

	// The leader gives up after 300 ms with no broker: the loop then sends
	// the counted try for the two calls behind it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.RateLimit(ctx, "hang", 1, client.WithTimeout(300*time.Millisecond))
	}()
	<-registered
	// A patient caller: 6 s.
	longCtx, longCancel := context.WithTimeout(ctx, 6*time.Second)
	defer longCancel()
	longErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		longErr <- c.RateLimit(longCtx, "hang", 1)
	}()
	<-registered
	// The caller under test: 700 ms.
	type result struct {
		err  error
		took time.Duration
	}
	short := make(chan result, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		err := c.RateLimit(ctx, "hang", 1, client.WithTimeout(700*time.Millisecond))
		short <- result{err, time.Since(start)}
	}()
	<-registered

	r := <-short
	if r.took > 2*time.Second {
		t.Errorf("RateLimit with WithTimeout(700ms) returned after %v while no broker answered", r.took)
	}
	if !errors.Is(r.err, client.ErrTimeout) {
		t.Errorf("RateLimit with WithTimeout(700ms): %v; want ErrTimeout", r.err)
	}
	if err := <-longErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RateLimit whose context's deadline passed: %v; want ErrTimeout/DeadlineExceeded", err)
	}
}

// TestCoalescedRateLimitBatchOverMaxCount: more than messages.MaxCount RateLimit
// calls waiting behind the Client's leader must all be admitted (the
// TryRateLimit coalescer splits its batches at MaxCount); a counted try with
// count > MaxCount is refused by the broker with invalid_argument.
func TestCoalescedRateLimitBatchOverMaxCount(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "many", 100000, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	// The leader's request is retried while the broker is down, and the
	// other calls take their places behind it.
	rvStopBroker(t, e)
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	const calls = messages.MaxCount + 2 // the leader and MaxCount+1 behind it
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.RateLimit(ctx, "many", 1)
		}()
		<-registered
	}
	rvStartBroker(t, e)
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d RateLimit calls on a limit with room failed; first: %v", failed, calls, first)
	}
	info, err := c.GetLimit(ctx, "many")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != calls {
		t.Fatalf("%d slots taken by %d admitted calls", info.ActiveSlots, calls)
	}
}

// TestCoalescedRateLimitTimeoutBehindHangingTurn: the same as
// TestCoalescedRateLimitTimeoutWhileBatchTryRetries on the contended path. The
// limit is full, so the leader queues and the calls behind it send their own
// requests one after the other. The broker stops just after the leader is
// queued: the first call's request is retried while no broker answers, and
// the call behind it must still end its wait at its WithTimeout instead of
// waiting for the request before it.
func TestCoalescedRateLimitTimeoutBehindHangingTurn(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	admin := e.Client
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// One slot, decaying in 100 s: full after one admission.
	if _, err := admin.CreateLimit(ctx, "turn", 1, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if err := admin.TryRateLimit(ctx, "turn", 1); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e)
	defer rvStartBroker(t, e) // for the embedded broker's cleanup

	// Calls 1-3 (leader A, B, C) just signal. Call 4 (X) holds the
	// coalescer's lock while it starts the broker, waits until the leader's
	// retried request is queued, and stops the broker again: the leader's
	// queued answer then starts the loop, whose first turn (B) meets no
	// broker.
	registered := make(chan struct{}, 1)
	var n int
	client.SetRateCallHook(c, func() {
		n++
		if n == 4 {
			rvStartBroker(t, e)
			rvAwaitWaiters(t, ctx, admin, "turn", 1)
			rvStopBroker(t, e)
		}
		registered <- struct{}{}
	})

	callsCtx, stopCalls := context.WithCancel(ctx)
	defer stopCalls()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopCalls() // before wg.Wait
	start := func(opts ...client.AcquireOption) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.RateLimit(callsCtx, "turn", 1, opts...)
		}()
		<-registered
	}
	start() // A, the leader: retried while no broker answers
	start() // B: patient
	type result struct {
		err  error
		took time.Duration
	}
	short := make(chan result, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		begin := time.Now()
		err := c.RateLimit(callsCtx, "turn", 1, client.WithTimeout(3*time.Second))
		short <- result{err, time.Since(begin)}
	}()
	<-registered
	start(client.WithTimeout(3 * time.Second)) // X

	select {
	case r := <-short:
		if r.took > 4500*time.Millisecond || !errors.Is(r.err, client.ErrTimeout) {
			t.Errorf("RateLimit with WithTimeout(3s): %v after %v; want ErrTimeout after about 3s", r.err, r.took)
		}
	case <-time.After(12 * time.Second):
		t.Errorf("RateLimit with WithTimeout(3s) had not returned after 12s (the call before it still retries)")
	}
}

// TestCoalescedRateLimitOutageTryAdmitsForDepartedCallers: while no broker answers,
// the counted try for the calls behind the leader is retried with the count
// it was first sent with. When the broker is back it admits all of them,
// although all but one caller had given up: their slots are taken for
// nobody (here 20 of 21), and every waiter at the broker waits for them to
// decay. A lone RateLimit takes nothing for a caller who gave up.
func TestCoalescedRateLimitOutageTryAdmitsForDepartedCallers(t *testing.T) {
	e := embedded(t)
	c, nc := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "waste", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e)
	restarted := false
	defer func() {
		if !restarted {
			rvStartBroker(t, e)
		}
	}()

	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	var wg sync.WaitGroup
	defer wg.Wait()
	leader := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		leader <- c.RateLimit(ctx, "waste", 1, client.WithTimeout(300*time.Millisecond))
	}()
	<-registered
	const gaveUp = 20
	shortCtx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	for range gaveUp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.RateLimit(shortCtx, "waste", 1)
		}()
		<-registered
	}
	survivor := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		survivor <- c.RateLimit(ctx, "waste", 1)
	}()
	<-registered

	if err := <-leader; !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("leader: %v, want ErrTimeout", err)
	}
	// The leader has returned (its messages are out): one more message is
	// the loop's counted try for the 21 calls behind it.
	sent := nc.Stats().OutMsgs
	deadline := time.Now().Add(10 * time.Second)
	for nc.Stats().OutMsgs <= sent {
		if time.Now().After(deadline) {
			t.Fatal("no counted try sent within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	giveUp() // 20 of the 21 callers give up
	rvStartBroker(t, e)
	restarted = true
	if err := <-survivor; err != nil {
		t.Fatalf("survivor: %v", err)
	}
	info, err := c.GetLimit(ctx, "waste")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != 1 {
		t.Fatalf("%d slots taken for 1 admitted caller (%d gave up while no broker answered)", info.ActiveSlots, gaveUp)
	}
}

// TestCoalescedRateLimitDeniedSlotsForAdmittedCallers: 12 RateLimit calls on one
// Client, all admitted in the end, none refused; denied_slots ("the sum of
// occupy refused with no_slots", PROTOCOL §5.7) must stay 0 as it does for
// 12 separate RateLimit calls. The counted try sent for the 11 calls behind
// the first finds the one slot taken and counts all 11 as denied. (The
// revert of the first RateLimit coalescing named this too; here it happens
// each time the limit goes from room to contended, for the whole batch.)
func TestCoalescedRateLimitDeniedSlotsForAdmittedCallers(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One slot free, then one every 50 ms.
	if _, err := c.CreateLimit(ctx, "denied", 1, client.WithSlotDecay(20)); err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	const calls = 12
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.RateLimit(ctx, "denied", 1); err != nil {
				t.Error(err)
			}
		}()
		<-registered
	}
	wg.Wait()
	info, err := c.GetLimit(ctx, "denied")
	if err != nil {
		t.Fatal(err)
	}
	if info.DeniedSlots != 0 {
		t.Fatalf("%d RateLimit calls, all admitted, none refused: denied_slots is %d", calls, info.DeniedSlots)
	}
}

// TestCoalescedRateLimitOutageFailsCallsOneRetryWindowAfterAnother: with the
// limit contended, the calls behind the leader send their requests one at a
// time, each once the one before is answered. While no broker answers, each
// is retried for the Client's WithRetryFor before it fails with
// ErrUnavailable, and only then does the next one start its own window: the
// n-th call fails after n windows instead of one (WithRetryFor: "After that
// they fail with ErrUnavailable"). Here 5 calls with a 1 s window: the last
// fails after about 5 s.
func TestCoalescedRateLimitOutageFailsCallsOneRetryWindowAfterAnother(t *testing.T) {
	const window = time.Second
	e := embedded(t)
	c, _ := rvQuietClient(t, e, client.WithRetryFor(window))
	admin := e.Client
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := admin.CreateLimit(ctx, "serial", 1, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if err := admin.TryRateLimit(ctx, "serial", 1); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e)
	defer rvStartBroker(t, e)

	const behind = 5
	registered := make(chan struct{}, 1)
	var n int
	var stopped time.Time
	client.SetRateCallHook(c, func() {
		n++
		if n == 1+behind {
			// The last call holds the coalescer's lock while the leader is
			// queued, then the broker stops: the loop starts on the
			// leader's queued answer and every turn meets no broker.
			rvStartBroker(t, e)
			rvAwaitWaiters(t, ctx, admin, "serial", 1)
			rvStopBroker(t, e)
			stopped = time.Now()
		}
		registered <- struct{}{}
	})
	leaderCtx, stopLeader := context.WithCancel(ctx)
	defer stopLeader()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopLeader()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.RateLimit(leaderCtx, "serial", 1) // queued, then waits for its grant
	}()
	<-registered
	type result struct {
		err error
		at  time.Time
	}
	results := make(chan result, behind)
	for range behind {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.RateLimit(ctx, "serial", 1)
			results <- result{err, time.Now()}
		}()
		<-registered
	}
	for range behind {
		r := <-results
		if took := r.at.Sub(stopped); !errors.Is(r.err, client.ErrUnavailable) || took > 2*window+window/2 {
			t.Errorf("RateLimit with no broker: %v, %v after the broker stopped; want ErrUnavailable after about WithRetryFor (%v)", r.err, took.Round(10*time.Millisecond), window)
		}
	}
}

// rvAwaitWaiters polls until the limit has n waiters at the broker.
func rvAwaitWaiters(t *testing.T, ctx context.Context, admin *client.Client, name string, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := admin.GetLimit(ctx, name)
		if err == nil && len(info.Waiters) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%q: not %d waiters within 10s: %+v, %v", name, n, info, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
