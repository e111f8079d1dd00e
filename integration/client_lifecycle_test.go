package integration

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
)

// TestDoReleasesWhenFnPanics: Do promises to release the slots however
// fn ends; a panicking fn must not leave the slot held (and renewed forever).
func TestDoReleasesWhenFnPanics(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "panic", 1); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("the panic did not propagate out of Do")
			}
		}()
		_ = c.Do(ctx, "panic", 1, func(context.Context) error { panic("boom") })
	}()
	info, err := c.GetLimit(ctx, "panic")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Holders) != 0 || info.ActiveSlots != 0 {
		t.Fatalf("after fn panicked the slot is still held: %d holders, %d active slots", len(info.Holders), info.ActiveSlots)
	}
}

// TestReleaseAfterFailedReleaseReleases: a Release that fails (here: its
// ctx had already ended) must not make a later Release report success
// without releasing anything.
func TestReleaseAfterFailedReleaseReleases(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "relretry", 1); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, "relretry", 1)
	if err != nil {
		t.Fatal(err)
	}
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Release(dead); err == nil {
		t.Fatal("Release with a cancelled ctx reported success")
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	info, err := c.GetLimit(ctx, "relretry")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Holders) != 0 {
		t.Fatalf("Release returned nil but the lease is still held: %+v", info.Holders)
	}
}

// TestCloseDuringBrokerOutageReturnsPromptly: Client.Close stops renewing;
// it must not block until a renewal in flight gives up (up to the lease's
// deadline) while no broker answers.
func TestCloseDuringBrokerOutageReturnsPromptly(t *testing.T) {
	const ttl = 9 * time.Second
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := admin.CreateLimit(ctx, "closeout", 1); err != nil {
		t.Fatal(err)
	}
	c, nc := lsClient(t, ev, lsQuiet)
	l, err := c.Acquire(ctx, "closeout", 1, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	rsStopBroker(t, ev)
	t.Cleanup(func() { rsStartBroker(t, ev) })
	sent := nc.Stats().OutMsgs
	eventually(t, ttl, "a renewal attempt", func() bool { return nc.Stats().OutMsgs >= sent+2 })
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v during a broker outage", d)
	}
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Fatalf("lease Err after Close: %v", l.Err())
	}
}

// TestWatchEndsWhenClientClosed: Watch must not keep its subscription
// and block forever once the client (or its connection) is closed.
func TestWatchEndsWhenClientClosed(t *testing.T) {
	for _, what := range []string{"client", "conn"} {
		t.Run(what, func(t *testing.T) {
			ev := newEnv(t)
			nc := ev.conn()
			c, err := client.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 30*time.Second)
			subs := nc.NumSubscriptions()
			done := make(chan error, 1)
			go func() { done <- c.Watch(ctx, "", func(client.Event) {}) }()
			eventually(t, 5*time.Second, "Watch subscribed", func() bool { return nc.NumSubscriptions() > subs })
			if what == "client" {
				_ = c.Close()
			} else {
				nc.Close()
			}
			select {
			case err := <-done:
				if !errors.Is(err, client.ErrClosed) {
					t.Fatalf("Watch returned %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch still running 5s after the client was closed")
			}
			_ = c.Close()
		})
	}
}

// TestDaemonSIGTERMKeepsHoldersAndWaiters: SIGTERM while a lease is
// held (and renewed) and a waiter is queued exits 0 promptly and keeps both.
func TestDaemonSIGTERMKeepsHoldersAndWaiters(t *testing.T) {
	bin := daemonBuild(t)
	addr, data := daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	url := "nats://" + addr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c := p.waitReady(url, "slotbroker")
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holderNC, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(holderNC.Close)
	holder, err := client.New(holderNC, lsQuiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Close() })
	lease, err := holder.Acquire(ctx, "db", 1, client.WithLeaseTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waiterNC, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(waiterNC.Close)
	waiter, err := client.New(waiterNC, lsQuiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = waiter.Close() })
	queued := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		l, err := waiter.Acquire(ctx, "db", 1, client.WithQueued(func(client.Queued) { close(queued) }))
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	<-queued
	start := time.Now()
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM with a holder and a waiter = %d, want 0:\n%s", code, p.stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	p = daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c2 := p.waitReady(url, "slotbroker")
	info, err := c2.GetLimit(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Holders) != 1 || info.Holders[0].LeaseID != lease.ID() || len(info.Waiters) != 1 {
		t.Fatalf("after restart: holders %+v waiters %+v; want the lease and one waiter", info.Holders, info.Waiters)
	}
	if lease.Err() != nil {
		t.Fatalf("lease lost across a clean restart: %v", lease.Err())
	}
	// The holder releases at once, likely before the waiter's connection is
	// back: the broker retries the grant within its reconnect grace, so the
	// waiter keeps its turn.
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d:\n%s", code, p.stderr)
	}
}

// TestAcquireTimeoutDuringBrokerOutage: WithTimeout bounds Acquire also
// while no broker answers, and the error says the broker was unavailable
// (so slotctl exits 69, not 75) while still matching ErrTimeout.
func TestAcquireTimeoutDuringBrokerOutage(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "outage", 1); err != nil {
		t.Fatal(err)
	}
	rsStopBroker(t, ev)
	t.Cleanup(func() { rsStartBroker(t, ev) })
	start := time.Now()
	_, err := c.Acquire(ctx, "outage", 1, client.WithTimeout(500*time.Millisecond))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Acquire with WithTimeout(500ms) returned after %v with no broker", d)
	}
	if !errors.Is(err, client.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Acquire during an outage: %v; want ErrTimeout, DeadlineExceeded and ErrUnavailable", err)
	}
}
