package integration

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// rtAdmissions collects the broker's "admitted" events on name: the
// broker's own admission timestamps.
func rtAdmissions(t *testing.T, ev *env, name string) func() []time.Time {
	t.Helper()
	nc := ev.conn()
	var mu sync.Mutex
	var at []time.Time
	_, err := nc.Subscribe(ev.e.Broker.Subjects().Event(name, messages.EventAdmitted), func(m *nats.Msg) {
		var e messages.Event
		if _, err := messages.Decode(m.Data, &e); err == nil {
			mu.Lock()
			at = append(at, e.At)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), at...)
	}
}

// rtMaxInWindow is the largest number of sorted times within any window [t, t+w).
func rtMaxInWindow(ts []time.Time, w time.Duration) (int, time.Time) {
	best, from := 0, time.Time{}
	j := 0
	for i := range ts {
		for j < len(ts) && ts[j].Sub(ts[i]) < w {
			j++
		}
		if j-i > best {
			best, from = j-i, ts[i]
		}
	}
	return best, from
}

// TestRateLimitThroughput is the acceptance check: 200 admissions
// through L=5, d=50/s from 8 concurrent clients take (200-5)/50 = 3.9 s
// (±5%) counted from the first admission, and no 1-second window admits
// more than L + d.
func TestRateLimitThroughput(t *testing.T) {
	const (
		total   = 200
		limit   = 5
		decay   = 50.0
		clients = 8
	)
	ev := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	if _, err := ev.e.Client.CreateLimit(ctx, "api", limit, client.WithSlotDecay(decay)); err != nil {
		t.Fatal(err)
	}
	events := rtAdmissions(t, ev, "api")
	cs := make([]*client.Client, clients)
	for i := range cs {
		cs[i] = ev.client()
		// Warm the connection so the first admission's latency is like the others'.
		if _, err := cs[i].GetLimit(ctx, "api"); err != nil {
			t.Fatal(err)
		}
	}
	startGun := make(chan struct{})
	var (
		next  atomic.Int64
		mu    sync.Mutex
		seen  []time.Time
		wg    sync.WaitGroup
		errCh = make(chan error, clients)
	)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGun
			for next.Add(1) <= total {
				if err := c.RateLimit(ctx, "api", 1); err != nil {
					errCh <- err
					return
				}
				now := time.Now()
				mu.Lock()
				seen = append(seen, now)
				mu.Unlock()
			}
		}()
	}
	close(startGun)
	wg.Wait()
	close(errCh)
	for err := range errCh {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Fatalf("%d admissions, want %d", len(seen), total)
	}
	sort.Slice(seen, func(i, j int) bool { return seen[i].Before(seen[j]) })
	ideal := time.Duration(float64(total-limit) / decay * float64(time.Second))

	var adm []time.Time
	eventually(t, 5*time.Second, "all admission events", func() bool { adm = events(); return len(adm) >= total })
	if len(adm) != total {
		t.Fatalf("%d admission events, want %d", len(adm), total)
	}
	sort.Slice(adm, func(i, j int) bool { return adm[i].Before(adm[j]) })
	brokerTook := adm[total-1].Sub(adm[0])
	// The clock starts at the first admission (the broker's timestamp: a
	// client sees it only after a reply's latency) and stops when the last
	// client returns.
	took := seen[total-1].Sub(adm[0])
	t.Logf("200 admissions: %v at the clients, %v at the broker (ideal %v)", took, brokerTook, ideal)
	for what, d := range map[string]time.Duration{"clients": took, "broker": brokerTook} {
		if lo, hi := ideal*95/100, ideal*105/100; d < lo || d > hi {
			t.Errorf("%d admissions took %v at the %s, want %v ±5%% (%v..%v)", total, d, what, ideal, lo, hi)
		}
	}
	maxWin := limit + int(decay)
	n, from := rtMaxInWindow(adm, time.Second)
	t.Logf("most admissions in a 1 s window: %d at the broker, %d seen by the clients (L+d = %d)",
		n, func() int { m, _ := rtMaxInWindow(seen, time.Second); return m }(), maxWin)
	if n > maxWin {
		t.Errorf("the broker admitted %d in the second from t+%v, more than L+d = %d", n, from.Sub(adm[0]), maxWin)
	}
	// The bucket's bound for every span, not only 1 s: admissions i..j (both
	// included) number at most L + d*(t_j - t_i). Broker timestamps are exact.
	for i := range adm {
		for j := i; j < len(adm); j++ {
			if k, bound := float64(j-i+1), float64(limit)+decay*adm[j].Sub(adm[i]).Seconds()+1e-3; k > bound {
				t.Fatalf("admissions %d..%d: %v in %v, more than L + d*span = %.3f", i+1, j+1, k, adm[j].Sub(adm[i]), bound)
			}
		}
	}
}

// TestRateLimitErrorsAndTry: no decay, occupy > limit, try.
func TestRateLimitErrorsAndTry(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 20*time.Second)
	if _, err := c.CreateLimit(ctx, "conc", 3); err != nil {
		t.Fatal(err)
	}
	err := c.RateLimit(ctx, "conc", 1)
	if !errors.Is(err, client.ErrNotRateLimit) {
		t.Fatalf("RateLimit on a limit without decay: %v, want ErrNotRateLimit", err)
	}
	if _, err := c.CreateLimit(ctx, "api", 2, client.WithSlotDecay(0.5)); err != nil {
		t.Fatal(err)
	}
	if err := c.RateLimit(ctx, "api", 3); !errors.Is(err, client.ErrInvalidOccupy) {
		t.Fatalf("occupy 3 of 2: %v, want ErrInvalidOccupy", err)
	}
	if err := c.RateLimit(ctx, "nope", 1, client.WithStrict()); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("strict on a missing limit: %v, want ErrNotFound", err)
	}
	for i := 0; i < 2; i++ {
		if err := c.TryRateLimit(ctx, "api", 1); err != nil {
			t.Fatalf("try %d: %v", i+1, err)
		}
	}
	start := time.Now()
	if err := c.TryRateLimit(ctx, "api", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("third try: %v, want ErrNoSlots", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a try took %v: it must not wait", d)
	}
	info, err := c.GetLimit(ctx, "api")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != 2 || info.NextSlotInMillis <= 0 || info.NextSlotInMillis > 2000 || len(info.Holders) != 0 {
		t.Fatalf("inspect: active %d next %dms holders %d, want 2, 1..2000ms, 0", info.ActiveSlots, info.NextSlotInMillis, len(info.Holders))
	}
}

// TestRateLimitAcquireOnDecayingLimit: a lease's slot is held while it
// lives and decays after release: it is free again only 1/d later.
func TestRateLimitAcquireOnDecayingLimit(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 20*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 1, client.WithSlotDecay(2)); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, "r", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "r", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("try while the lease is held: %v, want ErrNoSlots", err)
	}
	released := time.Now()
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "r", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("try right after release: %v, want ErrNoSlots (the slot decays first)", err)
	}
	if err := c.RateLimit(ctx, "r", 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(released); d < 500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("admitted %v after the release, want >= 500ms (1/d)", d)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if info, err := c.GetLimit(ctx, "r"); err != nil || info.ActiveSlots != 1 {
		t.Fatalf("after a second release: %+v %v, want 1 active slot (no double release)", info, err)
	}
}

// TestRateLimitChangesAtRuntime: raising the limit or the decay admits
// waiters at once, through the broker's timers.
func TestRateLimitChangesAtRuntime(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 1, client.WithSlotDecay(0.05)); err != nil { // a slot per 20 s
		t.Fatal(err)
	}
	if err := c.RateLimit(ctx, "r", 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	waiter := func() {
		c2 := ev.client()
		go func() { done <- c2.RateLimit(ctx, "r", 1) }()
	}
	waitQueued := func(n int) {
		eventually(t, 5*time.Second, "queued waiters", func() bool {
			info, err := c.GetLimit(ctx, "r")
			return err == nil && len(info.Waiters) == n
		})
	}
	waiter()
	waitQueued(1)
	start := time.Now()
	if _, err := c.UpdateLimit(ctx, "r", client.LimitUpdate{Limit: client.Ptr(2)}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("raising the limit admitted the waiter after %v", d)
	}
	// Level 2 of 2 at 0.05/s; a waiter would wait 20 s. At 20/s it waits 50 ms.
	waiter()
	waitQueued(1)
	start = time.Now()
	info, err := c.UpdateLimit(ctx, "r", client.LimitUpdate{SlotDecayPerSecond: client.Ptr(20.0)})
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != 2 {
		t.Fatalf("active %d right after the decay change, want 2 (the level is kept)", info.ActiveSlots)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("raising the decay admitted the waiter after %v, want about 50ms", d)
	}
}

// rtRestartBroker stops the env's broker and starts a new one on the same
// server and bucket.
func rtRestartBroker(t *testing.T, ev *env) {
	t.Helper()
	if err := ev.e.Broker.Stop(); err != nil {
		t.Fatalf("stop broker: %v", err)
	}
	b, err := broker.New(ev.e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	ev.e.Broker = b
}

// TestRateLimitRestart: a restarted broker keeps the bucket (no free burst)
// and the queued callers, who are admitted on schedule, in order.
func TestRateLimitRestart(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 2, client.WithSlotDecay(0.5)); err != nil { // a slot per 2 s
		t.Fatal(err)
	}
	before := time.Now()
	for i := 0; i < 2; i++ {
		if err := c.RateLimit(ctx, "r", 1); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		who int
		at  time.Time
		err error
	}
	done := make(chan result, 2)
	for i := 1; i <= 2; i++ {
		ci := ev.client()
		go func() {
			err := ci.RateLimit(ctx, "r", 1)
			done <- result{i, time.Now(), err}
		}()
		eventually(t, 5*time.Second, "waiter queued", func() bool {
			info, err := c.GetLimit(ctx, "r")
			return err == nil && len(info.Waiters) == i
		})
	}
	rtRestartBroker(t, ev)
	if time.Since(before) >= 2*time.Second {
		t.Skip("restart took longer than a slot's decay; nothing left to check")
	}
	if err := c.TryRateLimit(ctx, "r", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("try after restart: %v, want ErrNoSlots (no free burst)", err)
	}
	info, err := c.GetLimit(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != 2 || len(info.Waiters) != 2 || info.NextSlotInMillis <= 0 {
		t.Fatalf("after restart: active %d, %d waiters, next %dms; want 2, 2, > 0", info.ActiveSlots, len(info.Waiters), info.NextSlotInMillis)
	}
	for i := 1; i <= 2; i++ {
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.who != i {
			t.Fatalf("waiter %d admitted as #%d: not FIFO", r.who, i)
		}
		if d := r.at.Sub(before); d < time.Duration(i)*2*time.Second || d > time.Duration(i)*2*time.Second+5*time.Second {
			t.Fatalf("waiter %d admitted %v after the burst, want %v (+ latency)", i, d, time.Duration(i)*2*time.Second)
		}
	}
}
