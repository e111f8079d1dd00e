package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestUnreadableSnapshotsDoNotLoadAJournalTail: the journal is purged below
// the previous snapshot, so a start that cannot read the snapshots must not
// replay what is left of the journal from its first sequence as if it were
// the whole history: the limits and leases created before the purge would
// be gone, the start would serve that state and write it as the newest
// snapshot. A start that cannot read the state it needs must fail (or load
// it), never serve a part of it.
func TestUnreadableSnapshotsDoNotLoadAJournalTail(t *testing.T) {
	ev := newEnv(t, broker.WithSnapshotEvery(1, 100*time.Millisecond))
	ctx := ctxT(t, 2*time.Minute)
	c := ev.e.Client
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	held, err := c.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, journalStreamName)
	if err != nil {
		t.Fatal(err)
	}
	// Keep appending until snapshots were written and the journal purged
	// below the previous one: db's creation is no longer in the journal.
	i := 0
	eventually(t, 60*time.Second, "the journal purged below a snapshot", func() bool {
		i++
		if _, err := c.CreateLimit(ctx, fmt.Sprintf("x%d", i), 1); err != nil {
			t.Fatal(err)
		}
		info, err := stream.Info(ctx)
		return err == nil && info.State.FirstSeq > 3
	})
	rsStopBroker(t, ev)

	// The snapshots cannot be read (a chunk unreadable, as a failed or
	// timed-out read of it also is).
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeysFiltered(ctx, "snap.*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		if strings.Count(k, ".") != 1 {
			continue
		}
		if _, err := kv.Put(ctx, k+".0", []byte("unreadable")); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no snapshot found")
	}
	info, _ := stream.Info(ctx)
	t.Logf("%d snapshots made unreadable; journal %d..%d", n, info.State.FirstSeq, info.State.LastSeq)

	b, err := broker.New(ev.e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(sctx); err != nil {
		t.Logf("start refused: %v", err)
		return
	}
	ev.e.Broker = b
	got, err := c.GetLimit(ctx, "db")
	if err != nil || got.HoldersTotal != 1 || got.Holders[0].LeaseID != held.ID() {
		_, man := storedState(t, ev.conn())
		t.Fatalf("the start served the journal's tail (from sequence %d) as the whole state: limit db: %+v, %v (want its holder %s); newest snapshot now: %+v",
			info.State.FirstSeq, got, err, held.ID(), man)
	}
}
