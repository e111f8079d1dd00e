package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// TestBucketOfThePreviousReleaseIsImported: a bucket written by the release
// before the journal keeps its state in limit.*, lease.* and wait.* keys.
// The first start of this release imports it (leases with their tokens,
// which were their records' revisions, and waiters in their places), writes
// a snapshot, then removes the imported lease and wait keys; later starts
// read the snapshot, not the old keys.
func TestBucketOfThePreviousReleaseIsImported(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev) // nothing journaled yet: the bucket looks like the previous release's
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	put := func(key string, v any) uint64 {
		t.Helper()
		data, _ := json.Marshal(v)
		rev, err := kv.Put(ctx, key, data)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	put("limit.db", map[string]any{"name": "db", "limit": 2, "active": true, "created_at": now, "updated_at": now})
	leaseRev := put("lease.L1", map[string]any{"id": "L1", "names": []string{"db"}, "occupy": 1, "holder": "old",
		"ttl_ms": 3_600_000, "acquired_at": now, "expires_at": now.Add(time.Hour)})
	put("wait.W1", map[string]any{"id": "W1", "names": []string{"db"}, "occupy": 2, "holder": "queued",
		"ttl_ms": 30_000, "since": now, "notify": "_INBOX.upgrade.W1", "order": 7})

	rsStartBroker(t, ev)
	check := func(when string) {
		t.Helper()
		info, err := ev.e.Client.GetLimit(ctx, "db")
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if info.HoldersTotal != 1 || info.Holders[0].LeaseID != "L1" || info.Holders[0].Token != leaseRev || info.Holders[0].Holder != "old" {
			t.Fatalf("%s: holders %+v, want L1 with token %d (its record's revision)", when, info.Holders, leaseRev)
		}
		if info.WaitersTotal != 1 || info.Waiters[0].WaitID != "W1" {
			t.Fatalf("%s: waiters %+v, want W1", when, info.Waiters)
		}
	}
	check("after the import")
	eventually(t, 10*time.Second, "the imported lease and wait keys removed, a snapshot written", func() bool {
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			return false
		}
		snap, old := false, false
		for k := range lister.Keys() {
			snap = snap || strings.HasPrefix(k, "snap.")
			old = old || strings.HasPrefix(k, "lease.") || strings.HasPrefix(k, "wait.")
		}
		return snap && !old
	})
	rsRestartBroker(t, ev)
	check("after a restart from the snapshot")
	// New tokens go on above the imported one.
	if _, err := ev.e.Client.CreateLimit(ctx, "other", 1); err != nil {
		t.Fatal(err)
	}
	l, err := ev.client().TryAcquire(ctx, "other", 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() <= leaseRev {
		t.Fatalf("a new lease's token %d is not above the imported %d", l.Token(), leaseRev)
	}
}

// TestJournalAppendIsAppliedAllOrNothing: an append larger than the max
// payload is stored in parts (headers Slotbroker-Batch and Slotbroker-Part
// "i/n"). A crash between its parts leaves an append that nobody was
// answered for: recovery drops it whole and applies the complete appends
// after it.
func TestJournalAppendIsAppliedAllOrNothing(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev)
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "SLOTBROKER_JOURNAL_"+messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	now := time.Now().UTC()
	part := func(batch, part, name string) {
		t.Helper()
		rec, _ := json.Marshal(map[string]any{"name": name, "limit": 1, "active": true, "created_at": now, "updated_at": now})
		body, _ := json.Marshal(map[string]any{"ops": []map[string]any{{"k": "limit." + name, "v": json.RawMessage(rec)}}})
		m := nats.NewMsg("$SLOTBROKER." + messages.DefaultBucket + ".journal")
		m.Data = body
		m.Header.Set("Slotbroker-Batch", batch)
		m.Header.Set("Slotbroker-Part", part)
		ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(last))
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	part("X", "1/2", "ghost") // its part 2 never came: a crash between parts
	part("Y", "1/2", "split-a")
	part("Y", "2/2", "split-b")
	rsStartBroker(t, ev)
	if _, err := ev.e.Client.GetLimit(ctx, "ghost"); err == nil {
		t.Fatal("the append whose parts stopped short was applied")
	}
	for _, n := range []string{"split-a", "split-b"} {
		if _, err := ev.e.Client.GetLimit(ctx, n); err != nil {
			t.Fatalf("limit %s of the complete two-part append: %v", n, err)
		}
	}
}
