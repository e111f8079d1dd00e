package integration

import (
	"strings"
	"testing"
	"time"
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
	kv, put := legacyBucket(ctx, t, ev)
	now := time.Now().UTC()
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
	kv, put := legacyBucket(ctx, t, ev)
	now := time.Now().UTC()
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
