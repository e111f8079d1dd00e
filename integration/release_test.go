package integration

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestReleaseAndCancelDeletionsAreStored: a release and a cancel are
// answered before the journal append that deletes the lease or the waiter
// is stored (PROTOCOL.md §5.4), unlike an acquisition, whose records are
// stored before its answer. The deletions must still be stored: what a
// restart would load (the newest snapshot and the journal after it) ends up
// with neither the lease nor the waiter, and a broker crashed and restarted
// finds neither.
func TestReleaseAndCancelDeletionsAreStored(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "lazy", 1); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	stored := func(key string) bool {
		_, ok := storedRecords(t, nc)[key]
		return ok
	}

	first, err := c.Acquire(ctx, "lazy", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !stored("lease." + first.ID()) {
		t.Fatalf("lease %s not stored after its acquisition was answered", first.ID())
	}

	// A waiter queues behind first, then gives up.
	queued := make(chan struct{})
	wctx, give := context.WithCancel(ctx)
	defer give()
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.Acquire(wctx, "lazy", 1, client.WithQueued(func(client.Queued) { close(queued) }))
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
		t.Fatalf("%s not stored after the acquisition was answered queued", waitKey)
	}
	give()
	if err := <-waitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("given-up acquire: %v, want context.Canceled", err)
	}
	eventually(t, 10*time.Second, "the cancelled waiter's deletion stored", func() bool { return !stored(waitKey) })

	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the released lease's deletion stored", func() bool { return !stored("lease." + first.ID()) })

	rsCrashBroker(t, ev)
	info = rsGet(t, ev.client(), "lazy")
	if len(info.Holders) != 0 || len(info.Waiters) != 0 {
		t.Fatalf("after restart holders %+v waiters %+v, want none", info.Holders, info.Waiters)
	}
}

// TestTimedOutGrantStaysGoneAfterJournalOutage: a grant its waiter does
// not answer within the grant timeout is taken back and its slots go to the
// next waiter. Taking it back deletes the pending lease and the waiter;
// those deletions and the next waiter's lease are one change, so a restart
// never finds the taken-back lease (it would push it to its waiter again:
// two holders of a 1-slot limit). Here the journal loses its leader the
// moment the first grant arrives and stays out past the grant timeout: the
// next waiter is granted once the outage ends, the stored state has neither
// the taken-back lease nor its waiter, and a crashed and restarted broker
// never grants the first waiter again.
func TestTimedOutGrantStaysGoneAfterJournalOutage(t *testing.T) {
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
	outage, restored := envJournalOutage(t, ev)

	// A raw waiter w: it misses its first grant (slow or briefly
	// disconnected: the broker times the push out and passes the slots on),
	// and accepts a grant pushed later, as a still-waiting client does.
	var grants atomic.Int32
	firstLease := make(chan string, 1)
	outageDone := make(chan struct{})
	sub, err := nc.Subscribe("_INBOX.timedout.w", func(m *nats.Msg) {
		if grants.Add(1) == 1 {
			var g messages.Grant
			if json.Unmarshal(m.Data, &g) == nil && g.Lease != nil {
				firstLease <- g.Lease.ID
			}
			close(firstLease)
			// A journal-leader outage around the moment the broker takes
			// the grant back: it lasts past the grant timeout (the sleep is
			// the outage's length).
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
		[]byte(`{"occupy":1,"holder":"w","wait_id":"timedoutW","notify":"_INBOX.timedout.w"}`), 5*time.Second)
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
		l, err := cB.Acquire(ctx, "x", 1, client.WithHolder("b"), client.WithQueued(func(client.Queued) { close(queued) }))
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

	// b's grant was pushed once its change, the taking back of w's grant
	// included, was stored.
	recs := storedRecords(t, nc)
	if _, ok := recs["wait.timedoutW"]; ok {
		t.Fatal("wait.timedoutW is stored after w's grant was taken back and b was granted")
	}
	wLease := <-firstLease
	if _, ok := recs["lease."+wLease]; ok || wLease == "" {
		t.Fatalf("w's taken-back lease %q is stored after b was granted", wLease)
	}
	if _, ok := recs["lease."+bl.ID()]; !ok {
		t.Fatalf("b's lease %s is not stored after b was granted", bl.ID())
	}

	rsCrashBroker(t, ev)
	// A restarted broker that found w's taken-back lease would push it to w
	// again (w accepts); watch the holders for a while (the window in which
	// that push would come, polled).
	admin := ev.client()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info := rsGet(t, admin, "x")
		if len(info.Holders) > 1 {
			t.Fatalf("limit of 1 slot has %d holders after restart: %v (active %d)", len(info.Holders), rsHolderNames(info), info.ActiveSlots)
		}
	}
	if n := grants.Load(); n != 1 {
		t.Fatalf("w got %d grants, want 1 (its taken-back lease came back after the restart)", n)
	}
}
