package integration

// Benchmarks of failover and of the request path on a 3-node NATS cluster
// with two slotbroker daemons (journal and bucket R3), issue 12. Each one
// does a fixed amount of work in a single run, whatever b.N is, and reports
// its figures with b.ReportMetric (the built-in ns/op, which would be the
// whole run's wall time, is suppressed). Run them once each:
//
//	go test -run '^$' -bench 'BenchmarkFailover|BenchmarkR3CycleAndHandoff' -benchtime=1x -timeout 20m -v ./integration/
//
// (-v prints the b.Logf lines: every failover time, where the broker,
// clients and stream leaders are.) With a -benchtime of Nx for N > 1 the
// work would be done twice (the framework's first run with b.N = 1, then
// one with b.N = N); with the default -benchtime=1s it is done once, since a
// run takes longer than a second.
//
// They run on the failover tests' environment (newFailoverEnv, cycler); this
// file adds only the resume probe.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// BenchmarkFailover: 8 clients cycle Acquire+Release on 4 limits of 2
// (the failover tests' cycler: each lease held 1 ms) while the leading broker
// gets SIGKILL (or SIGTERM), 10 times in a row. Each failover's time is from
// the signal to the first lease granted to an Acquire sent after the signal
// (as cycler.firstOKAfter). Beside it, the time until the last of the 8
// clients got such a lease, and the time until the brokers answer again at
// all: a probe sends a fresh GetLimit request every 10 ms from the signal on
// (raw NATS requests, not through a Client), and the first one answered
// without an error ends it. A request sent to the leader just before or in
// the first milliseconds after a SIGKILL (before its server has seen the
// connection close) is lost, and its client waits for its request timeout
// (client.WithRequestTimeout, 5 s by default) before it retries, however
// soon the standby takes over. After each failover the stopped broker is
// started again and the next round waits until it stands by. Reported:
// median and worst of the 10, in ms, of each: ms-median and ms-worst (first
// client), ms-all-median and ms-all-worst (last client), ms-resume-median
// and ms-resume-worst (probe); every value is logged. At the end the
// cycler's history is checked as in the failover tests (no lease lost, no
// over-admission, unique tokens, FIFO).
func BenchmarkFailover(b *testing.B) {
	bin := daemonBuild(b)
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGKILL", syscall.SIGKILL}, {"SIGTERM", syscall.SIGTERM}} {
		b.Run(tc.name, func(b *testing.B) { benchFailover(b, bin, tc.sig) })
	}
}

// failoverRounds is the number of failovers of one BenchmarkFailover run.
const failoverRounds = 10

func benchFailover(b *testing.B, bin string, sig syscall.Signal) {
	fe := newFailoverEnvBin(b, bin, 2, nil)
	load := fe.startCycler(8, 4, 2, 4, 10*time.Minute)
	load.waitEach(b, time.Minute, 3)
	load.check(b)
	var gaps, alls, resumes []time.Duration // first client served, last client served, probe answered
	for r := range failoverRounds {
		leader := fe.leaderIndex()
		if leader < 0 {
			b.Fatalf("round %d: no leader", r+1)
		}
		p := fe.brokers[leader]
		t0 := load.markRound()
		if err := p.cmd.Process.Signal(sig); err != nil {
			b.Fatal(err)
		}
		pr := fe.startProbe("L0", t0) // every probe is sent after t0
		eventually(b, time.Minute, "every client's first Acquire sent after the signal getting its lease", func() bool {
			_, _, ok := load.servedAfter(t0)
			return ok || load.failed()
		})
		load.check(b)
		first, last, _ := load.servedAfter(t0)
		resumed, lost := pr.finish(b)
		gaps = append(gaps, first)
		alls = append(alls, last)
		resumes = append(resumes, resumed.Sub(t0))
		if code := p.wait(); sig == syscall.SIGTERM && code != 0 {
			b.Errorf("round %d: the stopped leader exited with %d:\n%s", r+1, code, p.stderr)
		}
		fe.restartBroker(leader)
		now := fe.waitRoles(1)
		b.Logf("failover %2d: brokers answer again after %v, first client served after %v, all after %v (leader broker %d -> %d)",
			r+1, resumed.Sub(t0).Round(time.Millisecond), first.Round(time.Millisecond), last.Round(time.Millisecond), leader, now)
		if len(lost) > 0 {
			b.Logf("    probe requests lost (no answer within %v), sent at: %v", probeTimeout, benchRoundAll(lost, time.Millisecond))
		}
		if resumed.Sub(t0) > 3*time.Second {
			b.Logf("    slow: the new leader's log:\n%s\n    the old leader's log:\n%s", benchTail(fe.brokers[now].stderr.String(), 30), benchTail(p.stderr.String(), 30))
		}
		if now == leader {
			b.Errorf("round %d: broker %d leads again after its %v and restart", r+1, leader, sig)
		}
		load.waitEach(b, time.Minute, 3)
		load.check(b)
	}
	load.finish(b)
	med, worst := benchMedian(gaps), slices.Max(gaps)
	allMed, allWorst := benchMedian(alls), slices.Max(alls)
	resMed, resWorst := benchMedian(resumes), slices.Max(resumes)
	b.Logf("%v, %d failovers, brokers answer again: median %v, worst %v; each: %v", sig, len(resumes), resMed.Round(time.Millisecond), resWorst.Round(time.Millisecond), benchRoundAll(resumes, time.Millisecond))
	b.Logf("%v, %d failovers, first client served: median %v, worst %v; each: %v", sig, len(gaps), med.Round(time.Millisecond), worst.Round(time.Millisecond), benchRoundAll(gaps, time.Millisecond))
	b.Logf("%v, %d failovers, all clients served: median %v, worst %v; each: %v", sig, len(alls), allMed.Round(time.Millisecond), allWorst.Round(time.Millisecond), benchRoundAll(alls, time.Millisecond))
	b.Logf("%d cycles in all, %d leases lost", load.total(), load.lost.Load())
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchMS(med), "ms-median")
	b.ReportMetric(benchMS(worst), "ms-worst")
	b.ReportMetric(benchMS(allMed), "ms-all-median")
	b.ReportMetric(benchMS(allWorst), "ms-all-worst")
	b.ReportMetric(benchMS(resMed), "ms-resume-median")
	b.ReportMetric(benchMS(resWorst), "ms-resume-worst")
}

// BenchmarkR3CycleAndHandoff measures, on the cluster with two brokers and
// its leader, with every client on a node other than the leading broker's:
//
//   - echo: the floor, a NATS request-reply round trip from a connection to
//     the clients' node to a responder on a connection to the broker's node
//     (the path of a client's request to the broker), p50 of 2000;
//   - cycle: one client's TryAcquire of a free limit then Release, p50 of
//     1000;
//   - handoff: a holder releases while one waiter is queued (Acquire on a
//     limit of 1): from the Release call to the waiter's Acquire returning,
//     p50 of 200.
//
// Reported: the three p50s in µs and cycle/echo and handoff/echo.
func BenchmarkR3CycleAndHandoff(b *testing.B) {
	fe := newFailoverEnv(b, 2, nil)
	c := fe.c
	leader := fe.waitRoles(1)
	rec, sts, err := fe.statuses()
	if err != nil {
		b.Fatal(err)
	}
	brokerNode := c.index(sts[rec.ID].NATSServer)
	if brokerNode < 0 {
		b.Fatalf("the leader's NATS server %q is not a node", sts[rec.ID].NATSServer)
	}
	clientNode := (brokerNode + 1) % c.Size()
	b.Logf("leading broker %d on %s; clients on %s; journal stream led by %s, bucket stream by %s",
		leader, c.Name(brokerNode), c.Name(clientNode),
		c.Name(c.StreamLeader(b, "SLOTBROKER_JOURNAL_"+messages.DefaultBucket)),
		c.Name(c.StreamLeader(b, "KV_"+messages.DefaultBucket)))
	ctx := ctxT(b, 3*time.Minute)

	echo := benchEcho(b, c.Conn(b, brokerNode), c.Conn(b, clientNode), 100, 2000)
	cycle := benchCycle(ctx, b, fe.client(clientNode), 50, 1000)
	handoff := benchHandoff(ctx, b, fe.client(clientNode), fe.client(clientNode), 20, 200)

	e, cy, h := benchMedian(echo), benchMedian(cycle), benchMedian(handoff)
	b.Logf("echo    p50 %v p99 %v (%d)", e, benchPercentile(echo, 0.99), len(echo))
	b.Logf("cycle   p50 %v p99 %v (%d) = %.2fx echo", cy, benchPercentile(cycle, 0.99), len(cycle), float64(cy)/float64(e))
	b.Logf("handoff p50 %v p99 %v (%d) = %.2fx echo", h, benchPercentile(handoff, 0.99), len(handoff), float64(h)/float64(e))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(benchUS(e), "echo-p50-us")
	b.ReportMetric(benchUS(cy), "cycle-p50-us")
	b.ReportMetric(benchUS(h), "handoff-p50-us")
	b.ReportMetric(float64(cy)/float64(e), "cycle/echo")
	b.ReportMetric(float64(h)/float64(e), "handoff/echo")
}

// benchEcho times n request-reply round trips (after warm ones) from req to
// a responder on resp, 64-byte bodies.
func benchEcho(b *testing.B, resp, req *nats.Conn, warm, n int) []time.Duration {
	b.Helper()
	subject := "bench.echo." + nats.NewInbox()
	sub, err := resp.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 64)
	// The subscription reaches the requester's node by the routes: poll
	// until a request finds it.
	eventually(b, clusterBound, "the echo responder reachable from the other node", func() bool {
		_, err := req.Request(subject, body, time.Second)
		return err == nil
	})
	out := make([]time.Duration, 0, n)
	for i := range warm + n {
		t0 := time.Now()
		if _, err := req.Request(subject, body, 5*time.Second); err != nil {
			b.Fatalf("echo %d: %v", i, err)
		}
		if i >= warm {
			out = append(out, time.Since(t0))
		}
	}
	return out
}

// benchCycle times n TryAcquire+Release cycles (after warm ones) of one
// client on a free limit of 1.
func benchCycle(ctx context.Context, b *testing.B, c *client.Client, warm, n int) []time.Duration {
	b.Helper()
	if _, err := c.CreateLimit(ctx, "bench-cycle", 1); err != nil {
		b.Fatal(err)
	}
	out := make([]time.Duration, 0, n)
	for i := range warm + n {
		t0 := time.Now()
		l, err := c.TryAcquire(ctx, "bench-cycle", 1)
		if err != nil {
			b.Fatalf("cycle %d: try acquire: %v", i, err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatalf("cycle %d: release: %v", i, err)
		}
		if i >= warm {
			out = append(out, time.Since(t0))
		}
	}
	return out
}

// benchHandoff times n handoffs (after warm ones) on a limit of 1 between
// two clients that take turns: the holder's Release is called once the
// other's Acquire is queued; the time runs until that Acquire returns.
func benchHandoff(ctx context.Context, b *testing.B, c1, c2 *client.Client, warm, n int) []time.Duration {
	b.Helper()
	const name = "bench-handoff"
	if _, err := c1.CreateLimit(ctx, name, 1); err != nil {
		b.Fatal(err)
	}
	lease, err := c1.TryAcquire(ctx, name, 1)
	if err != nil {
		b.Fatal(err)
	}
	waiter := c2
	type result struct {
		l   *client.Lease
		err error
		at  time.Time
	}
	out := make([]time.Duration, 0, n)
	for i := range warm + n {
		queued := make(chan struct{})
		var once sync.Once
		done := make(chan result, 1)
		go func() {
			l, err := waiter.Acquire(ctx, name, 1, client.WithQueued(func(client.Queued) { once.Do(func() { close(queued) }) }))
			done <- result{l, err, time.Now()}
		}()
		select {
		case <-queued:
		case r := <-done:
			b.Fatalf("handoff %d: Acquire returned before it was queued behind the holder (%v)", i, r.err)
		case <-time.After(10 * time.Second):
			b.Fatalf("handoff %d: the waiter not queued within 10s", i)
		}
		t0 := time.Now()
		if err := lease.Release(ctx); err != nil {
			b.Fatalf("handoff %d: release: %v", i, err)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			b.Fatalf("handoff %d: the waiter not granted within 10s of the release", i)
		}
		if r.err != nil {
			b.Fatalf("handoff %d: waiter: %v", i, r.err)
		}
		if i >= warm {
			out = append(out, r.at.Sub(t0))
		}
		lease = r.l
		if waiter == c2 {
			waiter = c1
		} else {
			waiter = c2
		}
	}
	if err := lease.Release(ctx); err != nil {
		b.Fatal(err)
	}
	return out
}

// resumeProbe sends a GetLimit request every 10 ms, each on its own, and
// notes when the first one was answered without an error, and which ones
// got no answer at all (not even no-responders) within probeTimeout: lost.
type resumeProbe struct {
	t0      time.Time
	sending chan struct{} // closed: send no more
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	at      time.Time       // the first good answer; zero until then
	lost    []time.Duration // sending times (after t0) of the requests lost
}

// probeTimeout bounds one probe request.
const probeTimeout = 3 * time.Second

// startProbe starts probing limit name, on the env's connection (to any
// node), for a round that began at t0.
func (fe *failoverEnv) startProbe(name string, t0 time.Time) *resumeProbe {
	nc := fe.nc
	ctx, cancel := context.WithCancel(context.Background())
	pr := &resumeProbe{t0: t0, sending: make(chan struct{}), ctx: ctx, cancel: cancel}
	subject := messages.NewSubjects("").Verb(messages.VerbGet, name)
	pr.wg.Add(1)
	go func() {
		defer pr.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			pr.wg.Add(1)
			go pr.send(nc, subject)
			select {
			case <-tick.C:
			case <-pr.sending:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	fe.t.Cleanup(pr.stop)
	return pr
}

func (pr *resumeProbe) send(nc *nats.Conn, subject string) {
	defer pr.wg.Done()
	sent := time.Now()
	rctx, cancel := context.WithTimeout(pr.ctx, probeTimeout)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, subject, []byte(`{}`))
	now := time.Now()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if errors.Is(err, context.DeadlineExceeded) && pr.ctx.Err() == nil {
		pr.lost = append(pr.lost, sent.Sub(pr.t0))
	}
	if err != nil {
		return
	}
	var r messages.LimitReply
	if _, err := messages.Decode(m.Data, &r); err != nil || r.Error != nil || r.Limit == nil {
		return
	}
	if pr.at.IsZero() || now.Before(pr.at) {
		pr.at = now
	}
}

func (pr *resumeProbe) stop() {
	pr.cancel()
	pr.wg.Wait()
}

// finish waits for a good answer, stops sending, waits for the requests
// in flight (at most probeTimeout) and returns when the first good answer
// came and when the lost requests were sent (after t0).
func (pr *resumeProbe) finish(tb testing.TB) (time.Time, []time.Duration) {
	tb.Helper()
	eventually(tb, time.Minute, "the probe answered", func() bool {
		pr.mu.Lock()
		defer pr.mu.Unlock()
		return !pr.at.IsZero()
	})
	close(pr.sending)
	pr.wg.Wait()
	pr.cancel()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	slices.Sort(pr.lost)
	return pr.at, pr.lost
}

// benchMedian is the middle of ds (the mean of the two middle ones for an even
// count); ds is not changed.
func benchMedian(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// benchPercentile is the q-quantile of ds (nearest rank); ds is not changed.
func benchPercentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func benchRoundAll(ds []time.Duration, m time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(m)
	}
	return out
}

// benchTail is the last n lines of s.
func benchTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func benchUS(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
