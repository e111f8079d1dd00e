package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// Helpers for the failover tests of this package: a real embedded
// nats-server with JetStream and brokers on connections of their own.

// foServer starts a nats-server with JetStream for the test.
func foServer(t *testing.T) string {
	t.Helper()
	s, err := StartNATS(NATSConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// foConn connects to url; the connection closes at the test's end.
func foConn(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// foBroker makes a broker with a short leader lease on a connection of its own.
func foBroker(t *testing.T, url string, opts ...Option) *Broker {
	t.Helper()
	b, err := New(foConn(t, url), append([]Option{WithLeaderLease(500 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// foLeader starts a broker that leads (the first on the bucket).
func foLeader(t *testing.T, url string, opts ...Option) *Broker {
	t.Helper()
	b := foBroker(t, url, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	return b
}

// foWait polls cond until it holds or within passes.
func foWait(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestStopEndsAStartThatStandsBy: Stop called while Start stands by (another
// broker leads) must end that Start: a stopped broker never goes on to
// campaign, take the lease and serve.
func TestStopEndsAStartThatStandsBy(t *testing.T) {
	url := foServer(t)
	leader := foLeader(t, url)
	standby := foBroker(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- standby.Start(ctx) }()
	returned := false
	t.Cleanup(func() {
		cancel()
		if returned {
			return
		}
		select {
		case <-started:
		case <-time.After(10 * time.Second):
		}
	})
	if !foWait(10*time.Second, func() bool { return standby.Role() == messages.RoleStandby }) {
		t.Fatal("the second broker did not stand by")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- standby.Stop() }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop of a standing-by broker did not return")
	}
	select {
	case err := <-started:
		returned = true
		t.Logf("Start returned after Stop: %v", err)
		return
	case <-time.After(3 * time.Second):
	}
	// Start still stands by. Hand the lease over: does the stopped broker take it?
	_ = leader.Stop()
	took := foWait(5*time.Second, func() bool { return standby.Role() == messages.RoleLeader })
	t.Fatalf("Start did not return within 3 s of Stop (it still stands by); after the leader stopped, the stopped broker took the leader lease: %v", took)
}

// TestStoppedStandbyDoesNotHoldTheLease: a broker stopped while standing by
// must not end up holding the leader lease (answering every request
// "shutting down" while renewing it forever): a third broker must be able to
// take over once the leader stops.
func TestStoppedStandbyDoesNotHoldTheLease(t *testing.T) {
	url := foServer(t)
	leader := foLeader(t, url)
	standby := foBroker(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- standby.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
		}
	})
	if !foWait(10*time.Second, func() bool { return standby.Role() == messages.RoleStandby }) {
		t.Fatal("the second broker did not stand by")
	}
	_ = standby.Stop()
	_ = leader.Stop()
	third := foBroker(t, url)
	tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer tcancel()
	err := third.Start(tctx)
	t.Cleanup(func() { _ = third.Stop() })
	if err != nil {
		t.Fatalf("a third broker did not take over within 5 s (%v); the broker stopped while standing by has role %q", err, standby.Role())
	}
}

// TestStartEndedAfterStopDoesNotPanic: Stop while Start stands by, then
// Start's context ends: Start's failure path must not close what Stop
// already closed (the status loop's stop channel).
func TestStartEndedAfterStopDoesNotPanic(t *testing.T) {
	url := foServer(t)
	foLeader(t, url)
	standby := foBroker(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				started <- errors.New("Start panicked: " + toString(r))
			}
		}()
		started <- standby.Start(ctx)
	}()
	if !foWait(10*time.Second, func() bool { return standby.Role() == messages.RoleStandby }) {
		t.Fatal("the second broker did not stand by")
	}
	_ = standby.Stop()
	cancel()
	select {
	case err := <-started:
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrStopped) {
			t.Fatalf("Start after Stop and cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its context ended")
	}
}

func toString(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	if s, ok := r.(string); ok {
		return s
	}
	return "panic"
}
