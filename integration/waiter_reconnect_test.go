package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
)

// TestWaiterCutOffWhenItsGrantIsPushedStillGetsIt: a queued waiter whose
// connection is down at the moment its grant is pushed (its server died, a
// network blip) makes the broker pass the slots on (nobody answered). Once
// it is connected again, its Acquire must still end with a lease: the client
// sends its acquisition again (same wait id and key) when it reconnects,
// instead of waiting for ever for a grant that will not come.
func TestWaiterCutOffWhenItsGrantIsPushedStillGetsIt(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	if _, err := ev.e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	held, err := ev.e.Client.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	br, nc, waiter := clientThroughBridge(t, ev)
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
	br.Cut()
	eventually(t, 10*time.Second, "the waiter's connection down", func() bool { return !nc.IsConnected() })
	// The grant is pushed while the waiter cannot answer: the broker passes the slots on.
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the slots passed on (nobody answered the grant)", func() bool {
		info, err := ev.e.Client.GetLimit(ctx, "db")
		return err == nil && info.HoldersTotal == 0 && info.WaitersTotal == 0
	})
	br.Restore()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the waiter's Acquire: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter cut off when its grant was pushed never got a lease after it reconnected")
	}
}

// clientThroughBridge is a client whose connection to ev's server goes
// through a bridge of its own, which a test cuts and restores; it
// reconnects at once, for ever.
func clientThroughBridge(t *testing.T, ev *env) (*bridge, *nats.Conn, *client.Client) {
	t.Helper()
	br := newBridge(t, strings.TrimPrefix(ev.e.URL, "nats://"))
	nc, err := nats.Connect("nats://"+br.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return br, nc, c
}
