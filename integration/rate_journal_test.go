package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRateSteadyStateAppendsPerReservation (measurement): 10,000 sequential
// TryRateLimit admissions on a limit of 1,000,000 decaying 1,000,000/s
// cost a handful of journaled records of the limit, one per reservation of
// a quarter of the limit (a quarter second of decay here), not one per
// admission: an admission the last record covers needs no journal append.
// The bound is derived from the run's own duration, so a slow machine
// gets a proportionally larger one.
func TestRateSteadyStateAppendsPerReservation(t *testing.T) {
	const n = 10000
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 120*time.Second)
	if _, err := c.CreateLimit(ctx, "ss", 1000000, client.WithSlotDecay(1000000)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	created := journalOps(t, nc, "limit.ss")
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := c.TryRateLimit(ctx, "ss", 1); err != nil {
			t.Fatalf("admission %d: %v", i+1, err)
		}
	}
	took := time.Since(start)
	w := int64(journalOps(t, nc, "limit.ss") - created)
	t.Logf("%d admissions in %v (%.0f us each): %d journaled limit records (%.1f per second)",
		n, took, float64(took.Microseconds())/n, w, float64(w)/took.Seconds())
	if max := int64(took/(250*time.Millisecond)) + 2; w > max {
		t.Fatalf("%d journaled records for %d admissions in %v, want at most %d (one per reservation of a quarter second)", w, n, took, max)
	}
}

// TestRateGrantHeldBackByJournalOutageIsCounted: a rate grant pushed to a
// queued waiter is an admission its client counts on, so it is pushed only
// once a stored record of the limit covers it; otherwise a crash would
// forget it and admit again before the limit allows. (Under the previous
// store the grant was pushed although the admission's write had failed,
// and the restarted broker admitted a third time a slot early.) The decay
// waker admits the waiter during a journal outage: its RateLimit does not
// return until the outage ends; then the stored decay state holds both
// admissions, and after a crash the next admission comes no earlier than
// that state allows.
func TestRateGrantHeldBackByJournalOutageIsCounted(t *testing.T) {
	const per = 2 * time.Second // limit 1, one slot decays every 2 s
	const decay = 1 / 2.0
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 90*time.Second)
	if _, err := c.CreateLimit(ctx, "pg", 1, client.WithSlotDecay(decay)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	tat := func(what string) time.Time {
		t.Helper()
		v, ok := recordField[time.Time](t, storedRecords(t, nc), "limit.pg", "tat")
		if !ok {
			t.Fatalf("no stored decay state of pg %s", what)
		}
		return v
	}
	if err := c.TryRateLimit(ctx, "pg", 1); err != nil {
		t.Fatal(err)
	}
	first := tat("after the first admission")

	waiter := ev.client()
	admitted := make(chan error, 1)
	go func() { admitted <- waiter.RateLimit(ctx, "pg", 1) }()
	eventually(t, 5*time.Second, "the rate waiter queued", func() bool {
		return len(rsGet(t, c, "pg").Waiters) == 1
	})
	begin, end := envJournalOutage(t, ev)
	begin()
	// The first slot decays: the waker admits the waiter in memory.
	eventually(t, 3*per, "the waiter admitted (in memory)", func() bool {
		return len(rsGet(t, c, "pg").Waiters) == 0
	})
	// The outage goes on a moment with the grant waiting for its record.
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-admitted:
		t.Fatalf("RateLimit returned (%v) during the journal outage: its admission is not stored", err)
	default:
	}
	end()
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatalf("RateLimit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was not admitted 30 s after the journal outage ended")
	}
	// The stored state holds both admissions: the waiter's slot past the
	// first's. (The first record may run microseconds past the live state:
	// half a slot is the margin.)
	second := tat("after the waiter's admission")
	if second.Sub(first) < per/2 {
		t.Fatalf("stored decay state %v after the waiter's admission, %v after the first: the waiter's admission is not stored",
			second, first)
	}

	rsCrashBroker(t, ev)
	// The next admission: the restarted broker must wait for the waiter's
	// slot to decay too (if it had forgotten it and restarted before that
	// moment, it would admit at once).
	if err := ev.client().RateLimit(ctx, "pg", 1); err != nil {
		t.Fatalf("admission after the restart: %v", err)
	}
	if third := tat("after the restart's admission"); third.Before(second.Add(per)) {
		t.Fatalf("stored decay state %v after the admission following the restart, want at least %v (a slot past the waiter's %v): the restart forgot the waiter's admission",
			third, second.Add(per), second)
	}
}

// TestStopReportsUnstoredExactState: Stop journals the exact decay state of
// every rate limit whose record reserved ahead, so that a clean restart
// loses nothing; when that append cannot be stored (here its connection is
// closed) the stored record keeps the reserve (25 slots more than taken),
// and Stop must say so rather than report a clean stop.
func TestStopReportsUnstoredExactState(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "se", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "se", 1); err != nil { // stored: 26 slots
		t.Fatal(err)
	}
	b := ev.e.Broker
	ev.e.Conn.Close()
	err := b.Stop()
	t.Logf("Stop = %v", err)
	if err == nil {
		t.Fatal("Stop returned nil though the limit's exact state could not be stored (the stored record reserves 25 slots more)")
	}
}

// TestDeletedLimitStaysDeletedAfterJournalOutage: a change held up by a
// journal outage is stored before any change made after it, so a deletion
// answered after the outage is never overtaken by an older write of the
// limit. (Under the previous store the JetStream client re-sent a write
// that met no responders after the deletion was stored, and the deleted
// limit came back after a restart.) An update sent during the outage, a
// delete once it ends: the stored state has no limit, nor has the bucket's
// informational copy (limit.<name>), and a restarted broker does not know
// the limit.
func TestDeletedLimitStaysDeletedAfterJournalOutage(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "dz", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	begin, end := envJournalOutage(t, ev)
	begin()
	// An update: its append meets no responders and is retried.
	update := requestAsync(nc, ev.e.Broker.Subjects().Verb(messages.VerbUpdate, "dz"), []byte(`{"limit":50}`), 60*time.Second)
	eventually(t, 10*time.Second, "the update applied (in memory)", func() bool {
		return rsGet(t, c, "dz").Limit.Limit == 50
	})
	end()
	if _, err := c.DeleteLimit(ctx, "dz"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if r := <-update; r.err != nil {
		t.Fatalf("the update: %v", r.err)
	}
	if _, ok := storedRecords(t, nc)["limit.dz"]; ok {
		t.Fatal("limit.dz is stored after its deletion was answered")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the bucket's copy of limit.dz removed", func() bool {
		_, err := kv.Get(ctx, "limit.dz")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	rsRestartBroker(t, ev)
	if info, err := ev.client().GetLimit(ctx, "dz"); err == nil {
		t.Fatalf("the deleted limit is back after a restart: %+v", info.Limit)
	}
	if _, err := kv.Get(ctx, "limit.dz"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the bucket's copy of limit.dz after a restart: %v, want not found", err)
	}
}
