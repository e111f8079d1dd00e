package integration

import (
	"context"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

func TestSmokeAcquireQueueRelease(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 20*time.Second)
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	l1, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	c2 := ev.client()
	go func() {
		l2, err := c2.Acquire(ctx, "db", 1)
		if err == nil && l2.Token() <= l1.Token() {
			t.Errorf("token %d not above %d", l2.Token(), l1.Token())
		}
		got <- err
	}()
	eventually(t, 5*time.Second, "waiter queued", func() bool {
		info, err := c.GetLimit(ctx, "db")
		return err == nil && len(info.Waiters) == 1
	})
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// Start must work with a context that has no deadline.
func TestSmokeStartWithoutDeadline(t *testing.T) {
	ev := newEnv(t)
	b, err := broker.New(ev.conn(), broker.WithPrefix("nodeadline"), broker.WithBucket("nodeadline"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("Start(context.Background()): %v", err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	c := ev.client(client.WithPrefix("nodeadline"))
	if _, err := c.CreateLimit(ctxT(t, 10*time.Second), "x", 1); err != nil {
		t.Fatal(err)
	}
}
