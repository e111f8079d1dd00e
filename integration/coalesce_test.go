package integration

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// Concurrent TryRateLimit calls on one Client go to the broker in counted
// batches: exactly the limit's slots are admitted, every other call gets
// ErrNoSlots, and fewer requests than calls cross the wire.
func TestTryRateLimitCoalesced(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	const slots, calls = 50, 400
	if _, err := c.CreateLimit(ctx, "burst", slots, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	counted := make(chan int, calls)
	watcher := ev.conn()
	sub, err := watcher.Subscribe(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "burst"), func(m *nats.Msg) {
		requests.Add(1)
		var r messages.AcquireRequest
		if _, err := messages.Decode(m.Data, &r); err == nil {
			counted <- max(r.Count, 1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}

	admitted, refused := tryAtOnce(ctx, t, c, "burst", calls, true)
	if admitted != slots || refused != calls-slots {
		t.Fatalf("admitted %d, refused %d; want %d and %d", admitted, refused, slots, calls-slots)
	}
	info, err := c.GetLimit(ctx, "burst")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != slots {
		t.Fatalf("broker counts %d active slots, want %d", info.ActiveSlots, slots)
	}
	// Every call was in exactly one request.
	total := 0
	eventually(t, 10*time.Second, "every request seen by the watcher", func() bool {
		for len(counted) > 0 {
			total += <-counted
		}
		return total == calls
	})
	if n := requests.Load(); n >= calls {
		t.Fatalf("%d requests for %d concurrent calls: nothing was coalesced", n, calls)
	}
	t.Logf("%d calls in %d requests", calls, requests.Load())
}

// coSlowBroker stops the real broker and answers acquisitions on name itself,
// granted after delay (a broker that is slow to persist). Each request it
// gets is signalled on the returned channel.
func coSlowBroker(t *testing.T, ev *env, name string, delay time.Duration) <-chan struct{} {
	t.Helper()
	subj := ev.e.Broker.Subjects().Verb(messages.VerbAcquire, name)
	rsStopBroker(t, ev)
	nc := ev.conn()
	got := make(chan struct{}, 100)
	sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
		got <- struct{}{}
		go func() {
			time.Sleep(delay)
			data, _ := messages.Marshal(messages.Msgpack, messages.AcquireReply{Status: messages.StatusGranted})
			_ = m.Respond(data)
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// Review: the first caller's WithTimeout became the timeout of every batch
// sent after it; a call waiting behind it with no WithTimeout and a 10 s
// context got ErrTimeout.
func TestCoalesceLeaderTimeoutIsItsOwn(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	got := coSlowBroker(t, ev, "slow", 300*time.Millisecond)

	leader := make(chan error, 1)
	go func() {
		leader <- c.TryRateLimit(context.Background(), "slow", 1, client.WithTimeout(100*time.Millisecond))
	}()
	<-got // the leader is at the broker
	err := c.TryRateLimit(ctxT(t, 10*time.Second), "slow", 1)
	if !errors.Is(<-leader, client.ErrTimeout) {
		t.Fatal("setup: the leader (100 ms timeout, 300 ms broker) should time out")
	}
	if err != nil {
		t.Fatalf("a call without WithTimeout and a 10 s ctx got %v: the leader's WithTimeout was applied to its batch", err)
	}
}

// Review: a call waiting behind one in flight when the Client was closed
// returned context.Canceled although its own context was never cancelled.
func TestCoalesceAfterCloseIsErrClosed(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	got := coSlowBroker(t, ev, "closed", 300*time.Millisecond)

	leader := make(chan error, 1)
	go func() { leader <- c.TryRateLimit(ctxT(t, 10*time.Second), "closed", 1) }()
	<-got // the leader is at the (slow) broker
	follower := make(chan error, 1)
	go func() { follower <- c.TryRateLimit(ctxT(t, 10*time.Second), "closed", 1) }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	err := <-follower
	t.Logf("leader: %v; follower: %v", <-leader, err)
	if !errors.Is(err, client.ErrClosed) {
		t.Fatalf("follower when the Client was closed got %v, want ErrClosed", err)
	}
}

// Review: callers who all gave up still got admitted: their batch was retried
// for WithRetryFor while no broker answered, and took slots no caller would
// use when the broker came back. A batch now ends with its last caller.
func TestCoalesceNoAdmissionsForCallersWhoLeft(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "ghost", 10, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	rsStopBroker(t, ev)

	var wg sync.WaitGroup
	var admitted atomic.Int64
	call := func(wait time.Duration) {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if c.TryRateLimit(cctx, "ghost", 1) == nil {
			admitted.Add(1)
		}
	}
	// A subscriber that never answers shows when the first call is out; it
	// takes only that one, so the batch behind it meets no responders and
	// is retried until the broker is back, unless it ends with its callers.
	raw := ev.conn()
	seen := make(chan *nats.Msg, 16)
	mute, err := raw.ChanSubscribe(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "ghost"), seen)
	if err != nil {
		t.Fatal(err)
	}
	if err := mute.AutoUnsubscribe(1); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	// The first gives up first; its batch (the five behind it) is then sent
	// while no broker answers, and those five give up later.
	wg.Add(1)
	go call(100 * time.Millisecond)
	<-seen
	for range 5 {
		wg.Add(1)
		go call(500 * time.Millisecond)
	}
	wg.Wait() // every caller has returned (ErrTimeout)
	if admitted.Load() != 0 {
		t.Fatalf("setup: %d callers admitted with no broker", admitted.Load())
	}
	rsStartBroker(t, ev)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		info, err := c.GetLimit(ctx, "ghost")
		if err == nil && info.ActiveSlots > 0 {
			t.Fatalf("%d slots admitted after every caller had returned ErrTimeout", info.ActiveSlots)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Review: denied_slots, the sum of occupy refused with no_slots, counted a
// counted request's refusals once, and not at all when it was partly admitted.
func TestCoalesceDeniedSlots(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 30*time.Second)
	const slots, calls = 50, 400
	if _, err := c.CreateLimit(ctx, "denied", slots, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	_, refused := tryAtOnce(ctx, t, c, "denied", calls, false)
	info, err := c.GetLimit(ctx, "denied")
	if err != nil {
		t.Fatal(err)
	}
	if info.DeniedSlots != refused {
		t.Fatalf("%d calls refused with ErrNoSlots, broker reports denied_slots %d", refused, info.DeniedSlots)
	}
}

// Review: a try on a closed Client was sent and admitted (only a blocking
// request checked the Client first): it took slots for nobody. Every
// acquisition on a closed Client now fails with ErrClosed and takes nothing.
func TestAcquisitionsAfterCloseAreErrClosed(t *testing.T) {
	ev := newEnv(t)
	admin := ev.client(lsQuiet)
	ctx := ctxT(t, 10*time.Second)
	if _, err := admin.CreateLimit(ctx, "shut", 10, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	c := ev.client(lsQuiet)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"TryRateLimit": func() error { return c.TryRateLimit(ctx, "shut", 1) },
		"RateLimit":    func() error { return c.RateLimit(ctx, "shut", 1) },
		"TryAcquire":   func() error { _, err := c.TryAcquire(ctx, "shut", 1); return err },
		"Acquire":      func() error { _, err := c.Acquire(ctx, "shut", 1); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, client.ErrClosed) {
			t.Errorf("%s on a closed Client: %v, want ErrClosed", name, err)
		}
	}
	info, err := admin.GetLimit(ctx, "shut")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != 0 {
		t.Fatalf("calls on a closed Client took %d slots", info.ActiveSlots)
	}
}

// tryAtOnce starts `calls` TryRateLimit(name, 1) calls on c together and
// counts the admitted and the refused (ErrNoSlots); with strict, any other
// error fails the test.
func tryAtOnce(ctx context.Context, t *testing.T, c *client.Client, name string, calls int, strict bool) (admitted, refused int64) {
	t.Helper()
	var nAdmitted, nRefused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := c.TryRateLimit(ctx, name, 1)
			switch {
			case err == nil:
				nAdmitted.Add(1)
			case errors.Is(err, client.ErrNoSlots):
				nRefused.Add(1)
			case strict:
				t.Errorf("TryRateLimit: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return nAdmitted.Load(), nRefused.Load()
}
