package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// TestImportedBucketKeepsTokensAboveReleasedLeases: the release before the
// journal gave each lease its record's revision as fencing token, so every
// token it handed out (also those of leases released since, whose records are
// gone) is at most the bucket's last revision. After the import, new
// tokens must go on above every token handed out before, not only above
// the leases still held: a storage fenced by a released lease's token would
// otherwise refuse every holder until the counter catches up.
func TestImportedBucketKeepsTokensAboveReleasedLeases(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev)
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
	lease := func(id string) map[string]any {
		return map[string]any{"id": id, "names": []string{"db"}, "occupy": 1, "holder": id,
			"ttl_ms": 3_600_000, "acquired_at": now, "expires_at": now.Add(time.Hour)}
	}
	put("limit.db", map[string]any{"name": "db", "limit": 2, "active": true, "created_at": now, "updated_at": now})
	held := put("lease.L1", lease("L1"))
	// L2 was granted the token `released` (its record's revision) and was
	// released since: the previous release purged its record.
	released := put("lease.L2", lease("L2"))
	if err := kv.Purge(ctx, "lease.L2"); err != nil {
		t.Fatal(err)
	}

	rsStartBroker(t, ev)
	l, err := ev.client().TryAcquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() <= released {
		t.Fatalf("the first lease after the import has token %d, not above %d handed out to a lease released before the upgrade (the held imported lease has %d): fencing tokens went backwards",
			l.Token(), released, held)
	}
}
