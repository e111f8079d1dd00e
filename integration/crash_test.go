package integration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
)

// Crash tests of the daemon: kill -9 at the worst moments, then check what
// came back. The journal, not deletions in the bucket, is what a restart
// reads, so a released lease never comes back.

// TestKilledDaemonBringsBackNoReleasedLease is the scenario: 24
// short jobs through a limit of 3, a pause longer than the bucket's purge
// markers lived (1 s), one job holding, kill -9, restart. Before the
// journal, the released leases came back (25 holders on a limit of 3) and
// blocked the limit until their deadlines.
func TestKilledDaemonBringsBackNoReleasedLease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := daemonBuild(t)
	addr, data := daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	url := "nats://" + addr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c := p.waitReady(url, "slotbroker")
	ctx := ctxT(t, 2*time.Minute)
	if _, err := c.CreateLimit(ctx, "db", 3); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Do(ctx, "db", 1, func(context.Context) error {
				time.Sleep(300 * time.Millisecond) // the job's work
				return nil
			}, client.WithHolder(fmt.Sprintf("job-%d", i)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("job: %v", err)
		}
	}
	// Let the time pass in which the old design's purge markers expired.
	time.Sleep(2 * time.Second)
	last, err := c.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Hour), client.WithHolder("last"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait()

	p = daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c2 := p.waitReady(url, "slotbroker")
	info, err := c2.GetLimit(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if info.HoldersTotal != 1 || len(info.Holders) != 1 || info.Holders[0].LeaseID != last.ID() {
		t.Fatalf("after kill -9 and restart: %d holders %+v, want only the last job's lease %s", info.HoldersTotal, info.Holders, last.ID())
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d:\n%s", code, p.stderr)
	}
}

// holdLog records, client side, when each lease was held: from Acquire's
// return to just before its Release is sent. Two leases that overlap were
// held at once.
type holdLog struct {
	mu    sync.Mutex
	spans [][2]time.Time
}

func (h *holdLog) add(from, to time.Time) {
	h.mu.Lock()
	h.spans = append(h.spans, [2]time.Time{from, to})
	h.mu.Unlock()
}

// peak is the most spans that overlap at one moment.
func (h *holdLog) peak() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	type edge struct {
		at time.Time
		d  int
	}
	edges := make([]edge, 0, 2*len(h.spans))
	for _, s := range h.spans {
		edges = append(edges, edge{s[0], +1}, edge{s[1], -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].d < edges[j].d // an end before a start at the same instant
		}
		return edges[i].at.Before(edges[j].at)
	})
	n, peak := 0, 0
	for _, e := range edges {
		n += e.d
		peak = max(peak, n)
	}
	return peak
}

// TestRepeatedKillsDuringCyclingLoseNothing kills the daemon with SIGKILL 20
// times while 64 clients acquire and release a limit of 8. Whatever the
// moment of each kill: no two holds beyond the limit overlap (checked from
// the clients' own hold intervals), no held lease is lost (a renewal that
// finds its lease gone), and once the clients have stopped and released,
// every slot is free again within the lease TTL (no ghost).
func TestRepeatedKillsDuringCyclingLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	const (
		limit   = 8
		clients = 64
		kills   = 20
		ttl     = 5 * time.Second
	)
	bin := daemonBuild(t)
	addr, data := daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	url := "nats://" + addr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	admin := p.waitReady(url, "slotbroker")
	ctx := ctxT(t, 5*time.Minute)
	if _, err := admin.CreateLimit(ctx, "hot", limit); err != nil {
		t.Fatal(err)
	}

	var (
		holds  holdLog
		cycles atomic.Int64
		lost   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	firstErr := make(chan error, 1)
	for i := range clients {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		c, err := client.New(nc, client.WithRetryFor(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := c.Acquire(ctx, "hot", 1, client.WithLeaseTTL(ttl), client.WithStrict(), client.WithHolder(fmt.Sprint("c", i)))
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						select {
						case firstErr <- err:
						default:
						}
					}
					continue
				}
				from := time.Now()
				time.Sleep(time.Millisecond) // the work
				if l.Err() != nil {
					lost.Add(1)
				}
				holds.add(from, time.Now())
				if err := l.Release(ctx); err != nil && !errors.Is(err, client.ErrLeaseLost) {
					failed.Add(1)
				}
				cycles.Add(1)
			}
		}()
	}
	for k := range kills {
		// Kill at a moment when work is flowing: after some more cycles.
		target := cycles.Load() + 50
		eventually(t, time.Minute, fmt.Sprintf("50 more cycles before kill %d", k+1), func() bool { return cycles.Load() >= target })
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.wait()
		p = daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
		p.waitReady(url, "slotbroker")
	}
	target := cycles.Load() + 50
	eventually(t, time.Minute, "cycling after the last restart", func() bool { return cycles.Load() >= target })
	close(stop)
	wg.Wait()

	if n := failed.Load(); n > 0 {
		t.Errorf("%d acquisitions or releases failed; first: %v", n, <-firstErr)
	}
	if n := lost.Load(); n > 0 {
		t.Errorf("%d leases were lost while held", n)
	}
	if peak := holds.peak(); peak > limit {
		t.Errorf("%d holds overlapped at one moment on a limit of %d", peak, limit)
	}
	c := p.waitReady(url, "slotbroker")
	eventually(t, ttl+10*time.Second, "every slot free after the clients stopped (no ghost)", func() bool {
		info, err := c.GetLimit(ctx, "hot")
		return err == nil && info.HoldersTotal == 0 && info.WaitersTotal == 0 && info.ActiveSlots == 0
	})
	t.Logf("%d cycles through %d kills", cycles.Load(), kills)
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d:\n%s", code, p.stderr)
	}
}
