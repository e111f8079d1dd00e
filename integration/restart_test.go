package integration

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
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
	old := ev.e.Broker
	ev.e.Conn.Close()
	t.Cleanup(func() { _ = old.Stop() }) // only to stop its timers
	nc, err := nats.Connect(ev.e.URL)
	if err != nil {
		t.Fatalf("reconnect broker: %v", err)
	}
	ev.e.Conn, ev.e.Client = nc, nil
	rsStartBroker(t, ev, opts...)
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
		t.Cleanup(func() { _ = old.Stop() })
	} else {
		ev.e.Stop()
	}
	e, err := broker.NewEmbedded(broker.EmbeddedConfig{StoreDir: ev.dir, Listen: fmt.Sprintf("127.0.0.1:%d", port)}, opts...)
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
		go func() {
			l, err := c.Acquire(ctx, name, 1, client.WithLeaseTTL(ttl), client.WithHolder(who))
			if err == nil {
				tr.begin(who)
			}
			grants <- granted{who, l, err}
		}()
		eventually(t, 10*time.Second, who+" queued", func() bool {
			info, err := admin.GetLimit(ctx, name)
			return err == nil && len(info.Waiters) == i+1
		})
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

// TestRestartFencingTokensAfterPurgedTail: when every lease was released and
// the bucket's purge markers have expired, the stream's tail is empty; a
// server restart must still not reuse sequence numbers as tokens.
func TestRestartFencingTokensAfterPurgedTail(t *testing.T) {
	const name = "tail"
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	var maxBefore uint64
	for range 5 {
		l, err := c.Acquire(ctx, name, 1)
		if err != nil {
			t.Fatal(err)
		}
		maxBefore = max(maxBefore, l.Token())
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "purge markers expired (only the limit left in the stream)", func() bool {
		s, err := js.Stream(ctx, "KV_"+messages.DefaultBucket)
		if err != nil {
			return false
		}
		si, err := s.Info(ctx)
		return err == nil && si.State.Msgs == 1 && si.State.LastSeq >= maxBefore
	})

	rsRestartServer(t, ev, true)

	rsGet(t, c, name)
	l, err := c.Acquire(ctx, name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() <= maxBefore {
		t.Fatalf("token %d after restart not above %d before", l.Token(), maxBefore)
	}
	_ = l.Release(ctx)
}
