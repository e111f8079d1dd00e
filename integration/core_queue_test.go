package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func TestCoreFIFO(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	others := []*client.Client{ev.client(), ev.client(), ev.client()}
	ctx := ctxT(t, 120*time.Second)
	coreLimit(t, c, "db", 1)
	h, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var mu sync.Mutex
	var order []int
	queued := make(chan int, 1)
	done := make(chan error, n)
	for i := range n {
		wc := others[i%len(others)]
		go func() {
			l, err := wc.Acquire(ctx, "db", 1, coreQueued(queued))
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			done <- l.Release(ctx)
		}()
		if p := coreRecv(t, queued, fmt.Sprintf("waiter %d queued", i)); p != i+1 {
			t.Errorf("waiter %d queued at position %d, want %d", i, p, i+1)
		}
	}
	info := coreInfo(t, c, "db")
	if len(info.Waiters) != n {
		t.Fatalf("waiters %d, want %d", len(info.Waiters), n)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := coreRecv(t, done, "waiters done"); err != nil {
			t.Fatal(err)
		}
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want queue order 0..%d", order, n-1)
		}
	}
}

func TestCoreLargeRequestNotStarved(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 120*time.Second)
	coreLimit(t, c, "db", 4)
	h, err := c.Acquire(ctx, "db", 3)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	queued := make(chan int, 1)
	done := make(chan error, 6)
	start := func(who string, occupy int) {
		go func() {
			l, err := c.Acquire(ctx, "db", occupy, coreQueued(queued))
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			order = append(order, who)
			mu.Unlock()
			done <- l.Release(ctx)
		}()
		coreRecv(t, queued, who+" queued")
	}
	start("big", 4)
	for i := range 5 {
		start(fmt.Sprintf("small%d", i), 1)
	}
	// One slot is free, yet no request for 1 may overtake the request for 4.
	info := coreInfo(t, c, "db")
	if info.ActiveSlots != 3 || len(info.Waiters) != 6 || info.Waiters[0].Occupy != 4 {
		t.Fatalf("active %d waiters %d (head %+v), want 3 active, 6 waiters headed by the request for 4",
			info.ActiveSlots, len(info.Waiters), info.Waiters)
	}
	mu.Lock()
	if len(order) != 0 {
		t.Fatalf("granted before the holder released: %v", order)
	}
	mu.Unlock()
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if err := coreRecv(t, done, "waiters done"); err != nil {
			t.Fatal(err)
		}
	}
	if order[0] != "big" {
		t.Fatalf("grant order %v: the request for 4 was overtaken", order)
	}
}

// coreHandoff queues n waiters on a fresh limit behind one holder, then
// records every message on every subject while the holder releases and the
// head waiter is granted. It returns the subjects seen.
func coreHandoff(t *testing.T, ev *env, name string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t, 300*time.Second))
	defer cancel()
	admin := ev.client()
	coreLimit(t, admin, name, 1)
	long := client.WithLeaseTTL(10 * time.Minute) // no renewal in the window
	h, err := admin.Acquire(ctx, name, 1, long)
	if err != nil {
		t.Fatal(err)
	}
	clients := []*client.Client{ev.client(), ev.client(), ev.client(), ev.client()}
	var queued, finished sync.WaitGroup
	queued.Add(n)
	granted := make(chan *client.Lease, n)
	for i := range n {
		finished.Add(1)
		go func() {
			defer finished.Done()
			l, err := clients[i%len(clients)].Acquire(ctx, name, 1, long, client.WithQueued(func(client.Queued) { queued.Done() }))
			if err == nil {
				granted <- l
			}
		}()
	}
	defer finished.Wait()
	defer cancel()
	allQueued := make(chan struct{})
	go func() { queued.Wait(); close(allQueued) }()
	coreRecv(t, allQueued, fmt.Sprintf("%d waiters queued", n))
	if info := coreInfo(t, admin, name); len(info.Waiters) != n {
		t.Fatalf("waiters %d, want %d", len(info.Waiters), n)
	}

	spy := ev.conn()
	var mu sync.Mutex
	var msgs []*nats.Msg
	// The brokers' periodic writes (lease renewals, status keys) and their
	// acknowledgements are no part of the handoff.
	skip := map[string]bool{}
	sub, err := spy.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if brokerHousekeeping(m.Subject) {
			skip[m.Reply] = true
			return
		}
		if skip[m.Subject] {
			delete(skip, m.Subject)
			return
		}
		msgs = append(msgs, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	coreRecv(t, granted, "head waiter granted")
	// The handoff ends when the broker has journaled the deletion of the
	// granted wait's record (its acceptance) and JetStream has acknowledged
	// that append.
	// The waiter confirms its grant with a renewal (PROTOCOL.md §8): its
	// answer comes once the renewal is journaled.
	renewed := func() bool {
		for _, m := range msgs {
			if strings.Contains(m.Subject, ".v1.renew.") && m.Reply != "" {
				for _, a := range msgs {
					if a.Subject == m.Reply {
						return true
					}
				}
			}
		}
		return false
	}
	eventually(t, 30*time.Second, "the accepted wait's deletion journaled and acknowledged, the grant's confirmation answered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if !renewed() {
			return false
		}
		for _, m := range msgs {
			if m.Subject != journalSubjectName || m.Reply == "" {
				continue
			}
			var body jBody
			if json.Unmarshal(m.Data, &body) != nil {
				continue
			}
			for _, op := range body.Ops {
				if strings.HasPrefix(op.K, "wait.") && len(op.V) == 0 {
					for _, a := range msgs {
						if a.Subject == m.Reply {
							return true
						}
					}
				}
			}
		}
		return false
	})
	_ = sub.Unsubscribe()
	mu.Lock()
	defer mu.Unlock()
	// Journal appends and their acknowledgements are left out: group
	// commit joins the handoff's changes into one or more appends as they
	// happen to come (counted apart, at most 3).
	appends := map[string]bool{}
	var subjects []string
	for _, m := range msgs {
		switch {
		case m.Subject == journalSubjectName:
			appends[m.Reply] = true
		case appends[m.Subject], strings.HasPrefix(string(m.Data), `{"stream":`):
			// An append's acknowledgement (also of one sent before the count began).
		default:
			subjects = append(subjects, m.Subject)
		}
	}
	if len(appends) > 3 {
		t.Errorf("a handoff on %s took %d journal appends, want at most 3", name, len(appends))
	}
	return subjects
}

// TestCoreNoPolling: waiters are woken by a pushed grant, never by polling,
// so a handoff (a release and the head waiter's grant, acceptance and
// journal appends) costs the same few messages with 10 or 1000 waiters
// queued, and publishes nothing about other limits; a release that frees a
// slot announces it on the limit's available event.
func TestCoreNoPolling(t *testing.T) {
	// Snapshots are periodic, not part of a handoff: none is due while the
	// messages are counted.
	ev := newEnv(t, broker.WithSnapshotEvery(1_000_000, time.Hour))
	few := coreHandoff(t, ev, "few", 10)
	many := coreHandoff(t, ev, "many", 1000)
	t.Logf("messages for one handoff: %d with 10 waiters, %d with 1000", len(few), len(many))
	if len(few) != len(many) {
		t.Errorf("a handoff with 1000 waiters took %d messages, with 10 took %d: not constant\n10: %v\n1000: %v",
			len(many), len(few), few, many)
	}
	if len(many) >= 14 {
		t.Errorf("a handoff took %d messages besides journal appends, want < 14: %v", len(many), many)
	}
	for _, s := range many {
		if strings.Contains(s, ".v1.events.few.") {
			t.Errorf("the handoff on many published on few: %s", s)
		}
	}

	// A release that frees a slot announces it.
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	coreLimit(t, c, "free", 2)
	l, err := c.Acquire(ctx, "free", 1)
	if err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	avail, err := nc.SubscribeSync("slotbroker.v1.events.free.available")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := avail.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no available event after a release: %v", err)
	}
	var e messages.Event
	if _, err := messages.Decode(m.Data, &e); err != nil || e.Kind != messages.EventAvailable || e.Limit != "free" || e.Available != 2 {
		t.Errorf("available event %s (%v): want kind available, limit free, 2 available", m.Data, err)
	}
}

func TestCoreTimeoutLeavesQueue(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 1)
	h, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 2)
	_, err = c.Acquire(ctx, "db", 1, client.WithTimeout(300*time.Millisecond), coreQueued(queued))
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WithTimeout: %v, want ErrTimeout and context.DeadlineExceeded", err)
	}
	if len(queued) != 1 {
		t.Fatal("the waiter was never queued")
	}
	if info := coreInfo(t, c, "db"); len(info.Waiters) != 0 {
		t.Fatalf("timed-out waiter still queued: %+v", info.Waiters)
	}
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Acquire(dctx, "db", 1, coreQueued(queued))
	cancel()
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctx deadline: %v, want ErrTimeout and context.DeadlineExceeded", err)
	}
	if info := coreInfo(t, c, "db"); len(info.Waiters) != 0 {
		t.Fatalf("timed-out waiter still queued: %+v", info.Waiters)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if info := coreInfo(t, c, "db"); info.ActiveSlots != 0 || len(info.Holders) != 0 {
		t.Fatalf("after release: active %d holders %d, want 0/0 (a gone waiter was granted)", info.ActiveSlots, len(info.Holders))
	}
}

func TestCoreCancelRacesGrant(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	wc := ev.client()
	ctx := ctxT(t, 300*time.Second)
	coreLimit(t, c, "db", 2)
	grants, cancels := 0, 0
	for round := range 50 {
		h, err := c.Acquire(ctx, "db", 2)
		if err != nil {
			t.Fatalf("round %d: holder: %v", round, err)
		}
		queued := make(chan int, 1)
		wctx, cancel := context.WithCancel(ctx)
		type result struct {
			l   *client.Lease
			err error
		}
		res := make(chan result, 1)
		go func() {
			l, err := wc.Acquire(wctx, "db", 2, coreQueued(queued))
			res <- result{l, err}
		}()
		coreRecv(t, queued, "waiter queued")
		released := make(chan error, 1)
		switch round % 3 {
		case 0:
			// The release's reply leaves as the grant is pushed.
			released <- h.Release(ctx)
			cancel()
		case 1:
			cancel()
			go func() { released <- h.Release(ctx) }()
		default:
			go func() { released <- h.Release(ctx) }()
			go cancel()
		}
		if err := coreRecv(t, released, "holder released"); err != nil {
			t.Fatal(err)
		}
		r := coreRecv(t, res, "waiter returned")
		cancel()
		switch {
		case r.err == nil:
			grants++
			if err := r.l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		case errors.Is(r.err, context.Canceled):
			cancels++
		default:
			t.Fatalf("round %d: waiter: %v, want a lease or context.Canceled", round, r.err)
		}
		// Nothing is held now: the whole limit must become free, well
		// before a leaked lease could expire (30 s).
		eventually(t, 10*time.Second, fmt.Sprintf("round %d: the full limit free again", round), func() bool {
			l, err := c.TryAcquire(ctx, "db", 2)
			if err != nil {
				return false
			}
			_ = l.Release(ctx)
			return true
		})
		info := coreInfo(t, c, "db")
		if info.ActiveSlots != 0 || len(info.Holders) != 0 || len(info.Waiters) != 0 {
			t.Fatalf("round %d: active %d holders %d waiters %d, want nothing", round, info.ActiveSlots, len(info.Holders), len(info.Waiters))
		}
	}
	t.Logf("50 rounds: %d grants won, %d cancellations won", grants, cancels)
}

func TestCoreDeadWaiterDoesNotBlock(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 1)
	h, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	deadConn := ev.conn()
	dead, err := client.New(deadConn)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	queued := make(chan int, 2)
	deadErr := make(chan error, 1)
	go func() {
		_, err := dead.Acquire(dctx, "db", 1, coreQueued(queued))
		deadErr <- err
	}()
	coreRecv(t, queued, "dead waiter queued")
	live := make(chan error, 1)
	go func() {
		l, err := c.Acquire(ctx, "db", 1, coreQueued(queued))
		if err == nil {
			err = l.Release(ctx)
		}
		live <- err
	}()
	coreRecv(t, queued, "live waiter queued")
	deadConn.Close()
	// The waiter whose connection closed learns it at once, not at its deadline.
	select {
	case err := <-deadErr:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("waiter on a closed connection returned %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter on a closed connection still waiting")
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-live:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("live waiter not granted behind a waiter whose connection closed: %+v", coreInfo(t, c, "db"))
	}
	if info := coreInfo(t, c, "db"); info.ActiveSlots != 0 || len(info.Waiters) != 0 {
		t.Errorf("active %d waiters %d, want 0/0", info.ActiveSlots, len(info.Waiters))
	}
}

func TestCoreMultiLimitAllOrNothing(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "a", 2)
	coreLimit(t, c, "b", 1)
	hb, err := c.Acquire(ctx, "b", 1)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 1)
	got := make(chan *client.Lease, 1)
	go func() {
		l, err := c.Acquire(ctx, "a", 1, client.WithNames("b"), coreQueued(queued))
		if err != nil {
			t.Errorf("[a,b]: %v", err)
		}
		got <- l
	}()
	coreRecv(t, queued, "[a,b] queued")
	a, b := coreInfo(t, c, "a"), coreInfo(t, c, "b")
	if a.ActiveSlots != 0 || len(a.Holders) != 0 || len(a.Waiters) != 1 || len(b.Waiters) != 1 {
		t.Fatalf("while b is full: a active %d holders %d waiters %d, b waiters %d; want a untouched and one waiter on each",
			a.ActiveSlots, len(a.Holders), len(a.Waiters), len(b.Waiters))
	}
	if err := hb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l := coreRecv(t, got, "[a,b] granted")
	if l == nil {
		t.FailNow()
	}
	if names := l.Names(); len(names) != 2 {
		t.Errorf("lease names %v, want a and b", names)
	}
	a, b = coreInfo(t, c, "a"), coreInfo(t, c, "b")
	if a.ActiveSlots != 1 || b.ActiveSlots != 1 {
		t.Errorf("after grant: a %d b %d, want 1/1", a.ActiveSlots, b.ActiveSlots)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Strict with one missing name takes nothing.
	if _, err := c.Acquire(ctx, "a", 1, client.WithNames("missing"), client.WithStrict()); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("strict [a,missing]: %v, want ErrNotFound", err)
	}
	if a := coreInfo(t, c, "a"); a.ActiveSlots != 0 || len(a.Waiters) != 0 {
		t.Errorf("strict failure left a with active %d waiters %d", a.ActiveSlots, len(a.Waiters))
	}
}

func TestCoreMultiLimitNoDeadlock(t *testing.T) {
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 240*time.Second)
	coreLimit(t, admin, "a", 2)
	coreLimit(t, admin, "b", 2)
	clients := []*client.Client{ev.client(), ev.client(), ev.client(), ev.client()}
	const workers, rounds = 16, 10
	done := make(chan error, workers)
	for w := range workers {
		first, second := "a", "b"
		if w%2 == 1 {
			first, second = "b", "a"
		}
		go func() {
			for range rounds {
				l, err := clients[w%len(clients)].Acquire(ctx, first, 1+w%2, client.WithNames(second))
				if err != nil {
					done <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				if err := l.Release(ctx); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range workers {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(180 * time.Second):
			t.Fatalf("[a,b] vs [b,a]: deadlock; a: %+v b: %+v", coreInfo(t, admin, "a"), coreInfo(t, admin, "b"))
		}
	}
	for _, n := range []string{"a", "b"} {
		if info := coreInfo(t, admin, n); info.ActiveSlots != 0 || len(info.Waiters) != 0 {
			t.Errorf("%s: active %d waiters %d, want 0/0", n, info.ActiveSlots, len(info.Waiters))
		}
	}
}

func TestCoreNoOverAdmission(t *testing.T) {
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 240*time.Second)
	const limit, holders = 5, 50
	coreLimit(t, admin, "db", limit)
	clients := make([]*client.Client, 5)
	for i := range clients {
		clients[i] = ev.client()
	}
	type interval struct{ from, to time.Time }
	var mu sync.Mutex
	var spans []interval
	var wg sync.WaitGroup
	for i := range holders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				l, err := clients[i%len(clients)].Acquire(ctx, "db", 1)
				if err != nil {
					t.Errorf("holder %d: %v", i, err)
					return
				}
				from := time.Now()
				time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond) // the work
				to := time.Now()
				if err := l.Release(ctx); err != nil {
					t.Errorf("holder %d release: %v", i, err)
				}
				mu.Lock()
				spans = append(spans, interval{from, to})
				mu.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	sampled := make(chan int)
	go func() {
		n := 0
		defer func() { sampled <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			info, err := admin.GetLimit(ctx, "db")
			if err != nil {
				t.Errorf("sample: %v", err)
				return
			}
			n++
			held := 0
			for _, h := range info.Holders {
				held += h.Occupy
			}
			if info.ActiveSlots > limit || held > limit {
				t.Errorf("sample: active_slots %d, held by holders %d: over the limit %d", info.ActiveSlots, held, limit)
			}
		}
	}()
	wg.Wait()
	close(stop)
	t.Logf("%d samples of the limit taken meanwhile", <-sampled)
	if len(spans) != 2*holders {
		t.Fatalf("%d hold intervals, want %d", len(spans), 2*holders)
	}
	type edge struct {
		at    time.Time
		delta int
	}
	edges := make([]edge, 0, 2*len(spans))
	for _, s := range spans {
		edges = append(edges, edge{s.from, +1}, edge{s.to, -1})
	}
	// Intervals are [from, to): at equal instants the end comes first.
	sort.Slice(edges, func(i, j int) bool {
		if !edges[i].at.Equal(edges[j].at) {
			return edges[i].at.Before(edges[j].at)
		}
		return edges[i].delta < edges[j].delta
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	if peak > limit {
		t.Fatalf("%d holders overlapped at one instant; the limit is %d", peak, limit)
	}
	if peak < 2 {
		t.Errorf("peak concurrency %d: the test did not exercise contention", peak)
	}
}

// A deadline that passes while the acquire request itself is in flight: the
// client withdraws the wait, and the broker may see that cancel before the
// acquire. The acquisition must then neither stay queued nor hold slots.
func TestCoreTimeoutDuringRequest(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 120*time.Second)
	coreLimit(t, c, "full", 1)
	coreLimit(t, c, "free", 1)
	h, err := c.Acquire(ctx, "full", 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		d := time.Duration(i%40+1) * 50 * time.Microsecond
		if l, err := c.Acquire(ctx, "full", 1, client.WithTimeout(d)); err == nil {
			t.Fatalf("granted %q on a full limit", l.ID())
		}
		if l, err := c.Acquire(ctx, "free", 1, client.WithTimeout(d)); err == nil {
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("free limit: %v, want a lease or ErrTimeout", err)
		}
	}
	// Orphans would stay until the holder releases, or hold slots for their
	// 30 s TTL.
	eventually(t, 10*time.Second, "no waiter left behind on the full limit", func() bool {
		return len(coreInfo(t, c, "full").Waiters) == 0
	})
	eventually(t, 10*time.Second, "no slot left held on the free limit", func() bool {
		info := coreInfo(t, c, "free")
		return info.ActiveSlots == 0 && len(info.Holders) == 0
	})
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
