package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// A release and a cancel are answered before their purges are stored (the
// purges go without an ack, PROTOCOL.md §5.4). The purges must still land:
// the records disappear from the bucket, and a broker restarted on it finds
// neither the lease nor the waiter.
func TestReleaseAndCancelPurgesAreStored(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "lazy", 1); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	stored := func(key string) bool {
		_, err := kv.Get(ctx, key)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("get %s: %v", key, err)
		}
		return err == nil
	}

	first, err := c.Acquire(ctx, "lazy", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !stored("lease." + first.ID()) {
		t.Fatalf("lease %s not in the bucket after its acquisition was answered", first.ID())
	}

	// A waiter queues behind first, then gives up.
	queued := make(chan struct{})
	wctx, give := context.WithCancel(ctx)
	defer give()
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Acquire(wctx, "lazy", 1, client.WithQueued(func(int) { close(queued) }))
		waitErr <- err
	}()
	<-queued
	info, err := c.GetLimit(ctx, "lazy")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Waiters) != 1 {
		t.Fatalf("waiters %+v, want 1", info.Waiters)
	}
	waitKey := "wait." + info.Waiters[0].WaitID
	if !stored(waitKey) {
		t.Fatalf("%s not in the bucket while the waiter is queued", waitKey)
	}
	give()
	if err := <-waitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up acquire: %v, want context.Canceled", err)
	}
	eventually(t, 10*time.Second, "the cancelled waiter's record purged", func() bool { return !stored(waitKey) })

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the released lease's record purged", func() bool { return !stored("lease." + first.ID()) })

	rsCrashBroker(t, ev)
	info = rsGet(t, ev.client(), "lazy")
	if len(info.Holders) != 0 || len(info.Waiters) != 0 {
		t.Fatalf("after restart holders %+v waiters %+v, want none", info.Holders, info.Waiters)
	}
}
