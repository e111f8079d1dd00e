package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// rsMode is a way of restarting the broker on the same store.
type rsMode struct {
	name    string
	restart func(t *testing.T, ev *env, opts ...broker.Option)
}

var rsModes = []rsMode{
	{"broker-stop", rsRestartBroker},
	{"broker-crash", rsCrashBroker},
	{"server-stop", func(t *testing.T, ev *env, opts ...broker.Option) { rsRestartServer(t, ev, false, opts...) }},
	{"server-crash", func(t *testing.T, ev *env, opts ...broker.Option) { rsRestartServer(t, ev, true, opts...) }},
}

// rsStopBroker stops the broker gracefully; the server and the store stay.
func rsStopBroker(t *testing.T, ev *env) {
	t.Helper()
	if err := ev.e.Broker.Stop(); err != nil {
		t.Fatalf("stop broker: %v", err)
	}
}

// rsStartBroker starts a new broker on the embedded connection (same server, same bucket).
func rsStartBroker(t *testing.T, ev *env, opts ...broker.Option) {
	t.Helper()
	b, err := broker.New(ev.e.Conn, opts...)
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	ev.e.Broker = b
}

// rsRestartBroker stops the broker gracefully and starts a new one on the same server.
func rsRestartBroker(t *testing.T, ev *env, opts ...broker.Option) {
	t.Helper()
	rsStopBroker(t, ev)
	rsStartBroker(t, ev, opts...)
}

// rsCrashBroker kills the broker without Stop (its connection closes under
// it) and starts a new one on a new connection to the same server.
func rsCrashBroker(t *testing.T, ev *env, opts ...broker.Option) {
	t.Helper()
	rsKillBroker(t, ev)
	rsStartBroker(t, ev, opts...)
}

// rsKillBroker closes the broker's connection under it (no Stop) and opens
// the connection the next broker will use.
func rsKillBroker(t *testing.T, ev *env) {
	t.Helper()
	old := ev.e.Broker
	ev.e.Conn.Close()
	t.Cleanup(func() { rsStopDead(t, old) })
	nc, err := nats.Connect(ev.e.URL)
	if err != nil {
		t.Fatalf("reconnect broker: %v", err)
	}
	ev.e.Conn, ev.e.Client = nc, nil
}

// rsStopDead stops a broker whose connection was closed under it, only to
// stop its timers; it must not hang.
func rsStopDead(t *testing.T, b *broker.Broker) {
	done := make(chan struct{})
	go func() {
		_ = b.Stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("Stop of a broker whose connection was closed did not return")
	}
}

// rsRestartServer takes the NATS server down with the broker (crash: the
// broker's connection is closed under it and the server shut down, without
// broker.Stop) and starts a new server and broker on the same store
// directory and port; clients reconnect.
func rsRestartServer(t *testing.T, ev *env, crash bool, opts ...broker.Option) {
	t.Helper()
	port := ev.e.Server.Addr().(*net.TCPAddr).Port
	if crash {
		old := ev.e.Broker
		ev.e.Conn.Close()
		ev.e.Server.Shutdown()
		ev.e.Server.WaitForShutdown()
		t.Cleanup(func() { rsStopDead(t, old) })
	} else {
		ev.e.Stop()
	}
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: ev.dir, Listen: fmt.Sprintf("127.0.0.1:%d", port)}, opts...)
	if err != nil {
		t.Fatalf("restart server and broker: %v", err)
	}
	ev.e = e
}

// rsTracker records hold intervals and tells the most slots held at once.
type rsTracker struct {
	mu    sync.Mutex
	edges []rsEdge
}

type rsEdge struct {
	at    time.Time
	delta int
	who   string
}

func (tr *rsTracker) begin(who string) { tr.add(who, +1) }
func (tr *rsTracker) end(who string)   { tr.add(who, -1) }

func (tr *rsTracker) add(who string, d int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.edges = append(tr.edges, rsEdge{at: time.Now(), delta: d, who: who})
}

// peak is the most intervals open at one moment (a start counts before an end at the same instant).
func (tr *rsTracker) peak() (int, string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	e := append([]rsEdge(nil), tr.edges...)
	sort.SliceStable(e, func(i, j int) bool {
		if !e[i].at.Equal(e[j].at) {
			return e[i].at.Before(e[j].at)
		}
		return e[i].delta > e[j].delta
	})
	n, peak, at := 0, 0, ""
	open := map[string]bool{}
	for _, x := range e {
		n += x.delta
		open[x.who] = x.delta > 0
		if n > peak {
			peak = n
			var who []string
			for w, o := range open {
				if o {
					who = append(who, w)
				}
			}
			sort.Strings(who)
			at = fmt.Sprint(who)
		}
	}
	return peak, at
}

// rsGet polls GetLimit until the (restarted) broker answers.
func rsGet(t *testing.T, c *client.Client, name string) *client.LimitInfo {
	t.Helper()
	var info *client.LimitInfo
	eventually(t, 20*time.Second, "GetLimit "+name+" answered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		info, err = c.GetLimit(ctx, name)
		return err == nil
	})
	return info
}

func rsHolderNames(info *client.LimitInfo) []string {
	var out []string
	for _, h := range info.Holders {
		out = append(out, h.Holder)
	}
	return out
}

func rsWaiterNames(info *client.LimitInfo) []string {
	var out []string
	for _, w := range info.Waiters {
		out = append(out, w.Holder)
	}
	return out
}

// TestRestartHoldersAndWaiters restarts the broker (four ways) with k
// holders and m queued waiters: the leases and the queue come back, holders
// keep renewing and release, waiters are granted in their original order,
// and the limit is never exceeded.
func TestRestartHoldersAndWaiters(t *testing.T) {
	for _, mode := range rsModes {
		t.Run(mode.name, func(t *testing.T) { rsHoldersAndWaiters(t, mode) })
	}
}

func rsHoldersAndWaiters(t *testing.T, mode rsMode) {
	const (
		k, m = 2, 3
		ttl  = 9 * time.Second
		name = "pool"
	)
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 120*time.Second)
	if _, err := admin.CreateLimit(ctx, name, k); err != nil {
		t.Fatal(err)
	}
	tr := &rsTracker{}

	holders := make([]*client.Lease, k)
	for i := range holders {
		who := fmt.Sprintf("H%d", i+1)
		l, err := ev.client().Acquire(ctx, name, 1, client.WithLeaseTTL(ttl), client.WithHolder(who))
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		tr.begin(who)
		holders[i] = l
	}

	type granted struct {
		who   string
		lease *client.Lease
		err   error
	}
	grants := make(chan granted, m)
	for i := range m {
		who := fmt.Sprintf("W%d", i+1)
		c := ev.client()
		// The queued reply comes once the waiter is stored: a crash after
		// it must keep the waiter (before it, the waiter may be lost, and
		// its client retries).
		queued := make(chan struct{})
		go func() {
			l, err := c.Acquire(ctx, name, 1, client.WithLeaseTTL(ttl), client.WithHolder(who),
				client.WithQueued(func(client.Queued) { close(queued) }))
			if err == nil {
				tr.begin(who)
			}
			grants <- granted{who, l, err}
		}()
		select {
		case <-queued:
		case <-ctx.Done():
			t.Fatalf("%s not queued", who)
		}
	}
	before, err := admin.GetLimit(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rsWaiterNames(before)); got != "[W1 W2 W3]" {
		t.Fatalf("waiters before restart: %s", got)
	}

	mode.restart(t, ev)
	restarted := time.Now()

	after := rsGet(t, admin, name)
	if len(after.Holders) != k {
		t.Fatalf("after restart %d holders %v, want %d", len(after.Holders), rsHolderNames(after), k)
	}
	for i, h := range after.Holders {
		b := before.Holders[i]
		if h.LeaseID != b.LeaseID || h.Token != b.Token || h.Holder != b.Holder {
			t.Fatalf("holder %d after restart %+v, before %+v", i, h, b)
		}
	}
	if len(after.Waiters) != m {
		t.Fatalf("after restart waiters %v, want %d", rsWaiterNames(after), m)
	}
	for i, w := range after.Waiters {
		if w.WaitID != before.Waiters[i].WaitID || w.Holder != before.Waiters[i].Holder || w.Position != i+1 {
			t.Fatalf("waiter %d after restart %+v, before %+v", i, w, before.Waiters[i])
		}
	}
	if after.ActiveSlots != k {
		t.Fatalf("active slots after restart %d, want %d", after.ActiveSlots, k)
	}

	// Holders keep renewing through the new broker.
	eventually(t, 3*ttl, "holders renewed after the restart", func() bool {
		for i, l := range holders {
			if err := l.Err(); err != nil {
				t.Fatalf("H%d lost its lease across the restart: %v", i+1, err)
			}
			if !l.ExpiresAt().After(restarted.Add(ttl)) {
				return false
			}
		}
		info, err := admin.GetLimit(ctx, name)
		if err != nil {
			return false
		}
		for _, h := range info.Holders {
			if !h.ExpiresAt.After(restarted.Add(ttl)) {
				return false
			}
		}
		return len(info.Holders) == k
	})
	select {
	case g := <-grants:
		t.Fatalf("%s granted while the limit was full (err %v)", g.who, g.err)
	default:
	}

	expectGrant := func(want string) *client.Lease {
		t.Helper()
		select {
		case g := <-grants:
			if g.err != nil {
				t.Fatalf("%s: %v", g.who, g.err)
			}
			if g.who != want {
				t.Fatalf("granted %s, want %s (FIFO order lost)", g.who, want)
			}
			return g.lease
		case <-time.After(20 * time.Second):
			t.Fatalf("%s not granted", want)
		}
		return nil
	}
	release := func(who string, l *client.Lease) {
		t.Helper()
		if err := l.Err(); err != nil {
			t.Fatalf("%s lease lost before release: %v", who, err)
		}
		tr.end(who)
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release %s: %v", who, err)
		}
		info, err := admin.GetLimit(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range info.Holders {
			if h.LeaseID == l.ID() {
				t.Fatalf("%s still a holder after Release", who)
			}
		}
	}

	release("H1", holders[0])
	w1 := expectGrant("W1")
	release("H2", holders[1])
	w2 := expectGrant("W2")
	release("W1", w1)
	w3 := expectGrant("W3")
	release("W2", w2)
	release("W3", w3)

	final, err := admin.GetLimit(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(final.Holders) != 0 || len(final.Waiters) != 0 || final.ActiveSlots != 0 {
		t.Fatalf("at the end: holders %v waiters %v active %d", rsHolderNames(final), rsWaiterNames(final), final.ActiveSlots)
	}
	if p, who := tr.peak(); p > k {
		t.Fatalf("%d slots held at once (%s), limit %d", p, who, k)
	}
}

// TestRestartFencingTokens: tokens issued after a restart are above every
// token issued before it, and held leases keep their token.
func TestRestartFencingTokens(t *testing.T) {
	for _, mode := range rsModes {
		t.Run(mode.name, func(t *testing.T) {
			const name = "fence"
			ev := newEnv(t)
			c := ev.client()
			ctx := ctxT(t, 60*time.Second)
			if _, err := c.CreateLimit(ctx, name, 3); err != nil {
				t.Fatal(err)
			}
			var last uint64
			next := func(opts ...client.AcquireOption) *client.Lease {
				t.Helper()
				l, err := c.Acquire(ctx, name, 1, opts...)
				if err != nil {
					t.Fatal(err)
				}
				if l.Token() <= last {
					t.Fatalf("token %d not above %d", l.Token(), last)
				}
				last = l.Token()
				return l
			}
			for range 3 {
				if err := next().Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// One lease renewed (its record rewritten) and one never renewed.
			renewed := next(client.WithLeaseTTL(3*time.Second), client.WithHolder("renewed"))
			first := renewed.ExpiresAt()
			plain := next(client.WithLeaseTTL(time.Minute), client.WithHolder("plain"))
			eventually(t, 10*time.Second, "lease renewed", func() bool { return renewed.ExpiresAt().After(first) })
			maxBefore := last

			mode.restart(t, ev)

			info := rsGet(t, c, name)
			tokens := map[string]uint64{}
			for _, h := range info.Holders {
				tokens[h.LeaseID] = h.Token
			}
			if tokens[renewed.ID()] != renewed.Token() || tokens[plain.ID()] != plain.Token() {
				t.Fatalf("tokens after restart %v, want %s=%d %s=%d", tokens, renewed.ID(), renewed.Token(), plain.ID(), plain.Token())
			}
			for range 3 {
				l := next()
				if l.Token() <= maxBefore {
					t.Fatalf("token %d after restart not above %d before", l.Token(), maxBefore)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if renewed.Err() != nil || plain.Err() != nil {
				t.Fatalf("leases lost across the restart: %v, %v", renewed.Err(), plain.Err())
			}
		})
	}
}

// TestRestartFencingTokensAfterPurgedJournal: a fencing token is only
// useful if no two leases ever share one, so tokens issued after a restart
// must be above every token issued before it, also when nothing stored
// holds a lease any more: every lease was released, the snapshots taken
// since hold no lease, and the journal entries that stored the leases were
// purged below an older snapshot. The counter then lives only in the
// snapshot's manifest (last_token), which a server crash-restart must read.
func TestRestartFencingTokensAfterPurgedJournal(t *testing.T) {
	const name = "tail"
	// A snapshot after every append: the journal is purged below the
	// snapshot before the newest within a few changes.
	ev := newEnv(t, broker.WithSnapshotEvery(1, 100*time.Millisecond))
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "other", 1); err != nil {
		t.Fatal(err)
	}
	var maxBefore uint64
	var ids []string
	for range 5 {
		l, err := c.Acquire(ctx, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		maxBefore = max(maxBefore, l.Token())
		ids = append(ids, l.ID())
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	nc := ev.conn()
	// Changes that hold no lease (updates of another limit) move the
	// snapshots on until neither they nor the journal mention a lease.
	n := 1
	eventually(t, 30*time.Second, "no lease left in the snapshot nor in the journal", func() bool {
		n = 3 - n // 1, 2, 1, ...: each update changes the limit
		if _, err := c.UpdateLimit(ctx, "other", client.LimitUpdate{Limit: &n}); err != nil {
			t.Fatal(err)
		}
		recs, man := storedState(t, nc)
		if man == nil {
			return false
		}
		for k := range recs {
			if strings.HasPrefix(k, "lease.") {
				return false
			}
		}
		for _, id := range ids {
			if journalOps(t, nc, "lease."+id) > 0 {
				return false
			}
		}
		return true
	})

	rsRestartServer(t, ev, true)

	rsGet(t, c, name)
	l, err := c.Acquire(ctx, name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() <= maxBefore {
		_, man := storedState(t, ev.conn())
		t.Fatalf("token %d after restart not above %d before (the newest snapshot's manifest: %+v)", l.Token(), maxBefore, man)
	}
	_ = l.Release(ctx)
}

// TestRestartUnacceptedGrant: the broker crashes after pushing a grant and
// before the waiter accepted it. The restarted broker pushes a grant again
// (the same lease, or a new one when the outage outlasted the first grant's
// TTL) whose lease is really held, for a whole TTL from its acceptance.
func TestRestartUnacceptedGrant(t *testing.T) {
	const ttl = 2 * time.Second
	for _, outlive := range []bool{false, true} {
		t.Run(map[bool]string{false: "short-outage", true: "outage-outlives-ttl"}[outlive], func(t *testing.T) {
			ev := newEnv(t)
			admin := ev.client()
			raw := ev.conn()
			ctx := ctxT(t, 60*time.Second)
			if _, err := admin.CreateLimit(ctx, "pend", 1); err != nil {
				t.Fatal(err)
			}
			h, err := admin.Acquire(ctx, "pend", 1)
			if err != nil {
				t.Fatal(err)
			}
			// A raw waiter that does not answer its first grant.
			pushed := make(chan *nats.Msg, 8)
			if _, err := raw.ChanSubscribe("_INBOX.rawwaiter.w1", pushed); err != nil {
				t.Fatal(err)
			}
			if err := raw.Flush(); err != nil {
				t.Fatal(err)
			}
			var acq messages.AcquireReply
			lsRaw(t, raw, lsSubj.Verb(messages.VerbAcquire, "pend"),
				messages.AcquireRequest{Occupy: 1, TTLMillis: ttl.Milliseconds(), WaitID: "w1", Notify: "_INBOX.rawwaiter.w1"}, &acq)
			if acq.Error != nil || acq.Status != messages.StatusQueued {
				t.Fatalf("raw acquire: %+v", acq)
			}
			next := func(what string) (*nats.Msg, messages.Grant) {
				t.Helper()
				select {
				case m := <-pushed:
					var g messages.Grant
					if err := json.Unmarshal(m.Data, &g); err != nil {
						t.Fatal(err)
					}
					return m, g
				case <-time.After(15 * time.Second):
					t.Fatalf("no %s", what)
				}
				return nil, messages.Grant{}
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			_, g1 := next("grant")
			if g1.Lease == nil {
				t.Fatalf("first grant %+v", g1)
			}

			rsKillBroker(t, ev)
			if outlive {
				eventually(t, 2*ttl, "the first grant's deadline passed", func() bool { return time.Now().After(g1.Lease.ExpiresAt) })
			}
			restart := time.Now()
			rsStartBroker(t, ev)

			m, g2 := next("grant pushed again after the restart")
			if g2.Error != nil || g2.Lease == nil || g2.WaitID != "w1" {
				t.Fatalf("grant after restart %+v", g2)
			}
			if err := m.Respond([]byte(`{"accept":true}`)); err != nil {
				t.Fatal(err)
			}
			// The acceptance is processed asynchronously: wait until it moved the
			// lease's deadline (a pending lease is in no queue, so an empty
			// waiter list does not show it).
			eventually(t, 10*time.Second, "the acceptance restarted the lease's clock", func() bool {
				info, err := admin.GetLimit(ctx, "pend")
				return err == nil && len(info.Waiters) == 0 && len(info.Holders) == 1 &&
					!info.Holders[0].ExpiresAt.Before(restart.Add(ttl))
			})
			info, err := admin.GetLimit(ctx, "pend")
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Holders) != 1 || info.Holders[0].LeaseID != g2.Lease.ID {
				t.Fatalf("holders %+v, want the re-pushed lease %s", info.Holders, g2.Lease.ID)
			}
			// The lease's clock starts when the waiter accepts, after the restart.
			if hd := info.Holders[0]; hd.ExpiresAt.Before(restart.Add(ttl)) {
				t.Fatalf("re-pushed lease expires at %v, before a whole TTL from the restart %v", hd.ExpiresAt, restart.Add(ttl))
			}
			if g2.Lease.Token < g1.Lease.Token {
				t.Fatalf("token %d after restart below the first grant's %d", g2.Lease.Token, g1.Lease.Token)
			}
		})
	}
}

// TestRestartLateAcceptance: a waiter accepts its grant later than the
// lease's TTL (within the grant timeout). The lease's clock starts at the
// acceptance: it must not expire before, and the new deadline must be
// persisted, so that a broker restarting between the grant's first deadline
// and the real one keeps the lease.
func TestRestartLateAcceptance(t *testing.T) {
	const (
		ttl   = 2 * time.Second
		delay = ttl + 500*time.Millisecond
	)
	opts := []broker.Option{broker.WithGrantTimeout(30 * time.Second)}
	ev := newEnv(t, opts...)
	admin := ev.client()
	raw := ev.conn()
	ctx := ctxT(t, 60*time.Second)
	if _, err := admin.CreateLimit(ctx, "late", 1); err != nil {
		t.Fatal(err)
	}
	events := make(chan *nats.Msg, 64)
	if _, err := raw.ChanSubscribe(lsSubj.Events("late"), events); err != nil {
		t.Fatal(err)
	}
	pushed := make(chan *nats.Msg, 8)
	if _, err := raw.ChanSubscribe("_INBOX.rawlate.w1", pushed); err != nil {
		t.Fatal(err)
	}
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	h, err := admin.Acquire(ctx, "late", 1)
	if err != nil {
		t.Fatal(err)
	}
	var acq messages.AcquireReply
	lsRaw(t, raw, lsSubj.Verb(messages.VerbAcquire, "late"),
		messages.AcquireRequest{Occupy: 1, TTLMillis: ttl.Milliseconds(), WaitID: "w1", Notify: "_INBOX.rawlate.w1"}, &acq)
	if acq.Error != nil || acq.Status != messages.StatusQueued {
		t.Fatalf("raw acquire: %+v", acq)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var m *nats.Msg
	select {
	case m = <-pushed:
	case <-time.After(15 * time.Second):
		t.Fatal("no grant")
	}
	t0 := time.Now()
	var g messages.Grant
	if err := json.Unmarshal(m.Data, &g); err != nil || g.Lease == nil {
		t.Fatalf("grant %s: %v", m.Data, err)
	}
	eventually(t, 2*delay, "a slow acceptance", func() bool { return time.Since(t0) > delay })
	t1 := time.Now()
	if err := m.Respond([]byte(`{"accept":true}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the acceptance processed", func() bool {
		hd, ok := lsHolder(t, admin, "late", g.Lease.ID)
		if !ok {
			t.Fatalf("lease %s expired before it was accepted", g.Lease.ID)
		}
		return !hd.ExpiresAt.Before(t1.Add(ttl))
	})
	for len(events) > 0 {
		var e messages.Event
		if err := json.Unmarshal((<-events).Data, &e); err == nil && e.LeaseID == g.Lease.ID && e.Kind == messages.EventExpired {
			t.Fatalf("lease %s expired while its grant awaited acceptance", g.Lease.ID)
		}
	}
	// The acceptance is answered to nobody: wait until what a restart
	// loads has it (no waiter, the lease with its real deadline).
	eventually(t, 10*time.Second, "the acceptance stored", func() bool {
		recs := storedRecords(t, raw)
		_, waiting := recs["wait.w1"]
		exp, _ := recordField[time.Time](t, recs, "lease."+g.Lease.ID, "expires_at")
		return !waiting && !exp.Before(t1.Add(ttl))
	})

	rsCrashBroker(t, ev, opts...)

	info := rsGet(t, admin, "late")
	if !time.Now().Before(t1.Add(ttl)) {
		t.Fatalf("the restart outlasted the accepted lease (deadline %v); the test machine is too slow", t1.Add(ttl))
	}
	if len(info.Holders) != 1 || info.Holders[0].LeaseID != g.Lease.ID || info.Holders[0].ExpiresAt.Before(t1.Add(ttl)) {
		t.Fatalf("after restart holders %+v, want lease %s expiring after %v", info.Holders, g.Lease.ID, t1.Add(ttl))
	}
}
