package integration

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// A release and a cancel are answered before their purges are acknowledged
// (PROTOCOL.md §5.4). The purges must still land: the records disappear from
// the bucket, and a broker restarted on it finds neither the lease nor the
// waiter.
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

// Found in review of a version that sent purges without an ack: jetstream's
// PublishMsgAsync retries a write that got "no responders" (a stream without
// a leader for a moment) 250 ms later, while a plain publish in the same
// moment is dropped silently. A refused pending lease's purges were lost
// while the lease its slots went to was stored; after a restart the old
// pending lease was granted again to a waiter still waiting: two holders of
// a 1-slot limit. Every purge is an acked (retried) write now, and grants
// wait for the purges of their change.
func TestReleasePurgesSurviveStreamOutage(t *testing.T) {
	const grantTimeout = 500 * time.Millisecond
	ev := newEnv(t, broker.WithGrantTimeout(grantTimeout))
	ctx := ctxT(t, 60*time.Second)
	cA := ev.client()
	if _, err := cA.CreateLimit(ctx, "x", 1); err != nil {
		t.Fatal(err)
	}
	first, err := cA.Acquire(ctx, "x", 1, client.WithHolder("a"))
	if err != nil {
		t.Fatal(err)
	}

	nc := ev.conn()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	outage, restored := kvOutage(ctx, t, js)

	// A raw waiter w: it misses its first grant (slow or briefly
	// disconnected: the broker times the push out and passes the slots on),
	// and accepts a grant pushed later, as a still-waiting client does.
	var grants atomic.Int32
	outageDone := make(chan struct{})
	sub, err := nc.Subscribe("_INBOX.zreview.w", func(m *nats.Msg) {
		if grants.Add(1) == 1 {
			// A stream-leader blip around the moment the broker refuses.
			go func() {
				defer close(outageDone)
				outage()
				time.Sleep(grantTimeout + 150*time.Millisecond)
				restored()
			}()
			return
		}
		_ = m.Respond([]byte(`{"accept":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var ar messages.AcquireReply
	resp, err := nc.Request(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "x"),
		[]byte(`{"occupy":1,"holder":"w","wait_id":"zreviewW","notify":"_INBOX.zreview.w"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(resp.Data, &ar); err != nil || ar.Status != messages.StatusQueued {
		t.Fatalf("w: %s %v", resp.Data, err)
	}

	// b queues behind w.
	cB := ev.client()
	queued := make(chan struct{})
	got := make(chan *client.Lease, 1)
	go func() {
		l, err := cB.Acquire(ctx, "x", 1, client.WithHolder("b"), client.WithQueued(func(int) { close(queued) }))
		if err != nil {
			t.Errorf("b: %v", err)
		}
		got <- l
	}()
	<-queued

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	<-outageDone
	var bl *client.Lease
	select {
	case bl = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("b not granted")
	}
	if bl == nil {
		t.Fatal("b: no lease")
	}

	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "wait.zreviewW"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("wait.zreviewW after its pending lease was refused and b was granted: %v, want not found", err)
	}

	rsCrashBroker(t, ev)
	// A restarted broker that found w's refused lease would push it to w
	// again (w accepts); watch the holders while that could happen.
	admin := ev.client()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info := rsGet(t, admin, "x")
		if len(info.Holders) > 1 {
			t.Fatalf("limit of 1 slot has %d holders after restart: %v (active %d)", len(info.Holders), rsHolderNames(info), info.ActiveSlots)
		}
	}
	if n := grants.Load(); n != 1 {
		t.Fatalf("w got %d grants, want 1 (its refused lease came back after the restart)", n)
	}
}
