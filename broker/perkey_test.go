package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func mustCreatePerKey(t *testing.T, st *state, now time.Time, name string, limit int, decay float64) {
	t.Helper()
	if r := st.create(now, name, &messages.CreateRequest{Limit: limit, SlotDecayPerSecond: decay, PerKey: true}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
}

func TestEachKeyHasTheFamilysSlotsToItself(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 2, 0)
	for _, key := range []string{"acme", "globex"} {
		for i := 0; i < 2; i++ {
			if r := acquireOK(t, st, *now, "tenant."+key, messages.AcquireRequest{Occupy: 1, Try: true}); r.lease == nil {
				t.Fatalf("%s #%d not granted: %+v", key, i, r.reply)
			}
		}
		r := st.acquire(*now, "tenant."+key, &messages.AcquireRequest{Occupy: 1, Try: true}, messages.JSON, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeNoSlots {
			t.Fatalf("%s third try: %+v, want no_slots", key, r.reply)
		}
	}
	if n := len(st.limits["tenant"].keys); n != 2 {
		t.Fatalf("%d live keys, want 2", n)
	}
}

func TestAKeyIsDroppedWhenIdleAndStoresNothing(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	fx := &effects{}
	r := st.acquire(*now, "tenant.acme", &messages.AcquireRequest{Occupy: 1}, messages.JSON, fx)
	for _, op := range fx.ops {
		if op.key == limitKey("tenant.acme") {
			t.Fatalf("a concurrency key stored a limit record: %s", op.val)
		}
	}
	q := acquireOK(t, st, *now, "tenant.acme", messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "n.w"})
	if q.reply.Status != messages.StatusQueued {
		t.Fatalf("second acquisition: %+v", q.reply)
	}
	// The waiter cancels: the key still has its holder.
	st.cancel(*now, "w", &effects{})
	if st.limits["tenant.acme"] == nil {
		t.Fatal("key dropped while held")
	}
	st.release(*now, r.lease.id, &effects{})
	if st.limits["tenant.acme"] != nil || len(st.limits["tenant"].keys) != 0 {
		t.Fatal("idle key kept after its last release")
	}
	// A refused try does not leave a key behind either.
	mustCreatePerKey(t, st, *now, "zero", 0, 0)
	st.acquire(*now, "zero.k", &messages.AcquireRequest{Occupy: 1, Try: true}, messages.JSON, &effects{})
	if st.limits["zero.k"] != nil {
		t.Fatal("a refused try left its key behind")
	}
}

func TestARateKeyIsDroppedOnceItsBucketHasDrained(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "api", 2, 1) // 2 slots, 1 per second
	fx := &effects{}
	acquireOK(t, st, *now, "api.acme", messages.AcquireRequest{Occupy: 2, Rate: true, Try: true})
	st.dropIdle(*now, fx, "api.acme")
	if st.limits["api.acme"] == nil {
		t.Fatal("rate key dropped before its bucket drained: its slots would come back")
	}
	at := st.wakeAt(*now, "api.acme")
	if want := now.Add(2 * time.Second); !at.Equal(want) {
		t.Fatalf("wake at %v, want %v (drained)", at, want)
	}
	*now = at
	st.limits["api.acme"].stored = true
	fx = &effects{}
	st.dispatch(*now, fx, "api.acme")
	if st.limits["api.acme"] != nil {
		t.Fatal("drained rate key kept")
	}
	purged := false
	for _, op := range fx.ops {
		purged = purged || (op.key == limitKey("api.acme") && op.val == nil)
	}
	if !purged {
		t.Fatal("a drained rate key's stored decay state was not purged")
	}
}

func TestUpdatingTheFamilyAppliesToEveryKey(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	acquireOK(t, st, *now, "tenant.a", messages.AcquireRequest{Occupy: 1})
	acquireOK(t, st, *now, "tenant.b", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "tenant.a", "wa", 0)
	queueWaiter(t, st, *now, "tenant.b", "wb", 0)
	two := 2
	fx := &effects{}
	if r := st.update(*now, "tenant", &messages.UpdateRequest{Limit: &two}, fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	if len(fx.grants) != 2 {
		t.Fatalf("raising the family granted %d waiters, want 2 (one per key)", len(fx.grants))
	}
	if got := st.limits["tenant.a"].cfg.Limit; got != 2 {
		t.Fatalf("key limit %d after the update, want 2", got)
	}
	// An idle key created afterwards has the new limit too.
	if got := st.get(*now, "tenant.new").Limit; got == nil || got.Limit.Limit != 2 || got.Key != "new" || got.Name != "tenant" {
		t.Fatalf("idle key info %+v", got)
	}
}

func TestAFamilyIsAcquiredOnlyWithAKeyAndAPlainLimitOnlyWithout(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	mustCreate(t, st, *now, "db", 1)
	for _, ref := range []string{"tenant", "db.k"} {
		r := st.acquire(*now, ref, &messages.AcquireRequest{Occupy: 1, Try: true}, messages.JSON, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeInvalidArgument {
			t.Fatalf("%s: %+v, want invalid_argument", ref, r.reply)
		}
	}
	for _, ref := range []string{"tenant.a.b", "tenant.", "tenant.a b"} {
		r := st.acquire(*now, ref, &messages.AcquireRequest{Occupy: 1, Try: true}, messages.JSON, &effects{})
		if r.reply.Error == nil || r.reply.Error.Code != messages.CodeInvalidName {
			t.Fatalf("%q: %+v, want invalid_name", ref, r.reply)
		}
	}
}

func TestDeletingAFamilyEndsItsKeys(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	acquireOK(t, st, *now, "tenant.a", messages.AcquireRequest{Occupy: 1})
	queueWaiter(t, st, *now, "tenant.a", "wa", 0)
	fx := &effects{}
	if r := st.remove(*now, "tenant", fx); r.Error != nil {
		t.Fatal(r.Error)
	}
	if st.limits["tenant.a"] != nil || len(st.leases) != 0 || len(st.waiters) != 0 || len(fx.fails) != 1 {
		t.Fatalf("after delete: limits %v leases %d waiters %d fails %d", len(st.limits), len(st.leases), len(st.waiters), len(fx.fails))
	}
}

func TestFamilyInfoListsLiveKeys(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 2, 0)
	acquireOK(t, st, *now, "tenant.b", messages.AcquireRequest{Occupy: 2})
	acquireOK(t, st, *now, "tenant.a", messages.AcquireRequest{Occupy: 1})
	info := st.get(*now, "tenant").Limit
	if info.KeysTotal != 2 || len(info.Keys) != 2 || info.Keys[0].Key != "a" || info.Keys[1].ActiveSlots != 2 {
		t.Fatalf("keys %+v total %d", info.Keys, info.KeysTotal)
	}
	if info.ActiveSlots != 3 || info.HoldersTotal != 2 || len(info.Holders) != 0 {
		t.Fatalf("family totals: active %d holders %d (listed %d); want its keys' 3 and 2, none listed", info.ActiveSlots, info.HoldersTotal, len(info.Holders))
	}
	if infos := st.listAfter(*now, "", 10); len(infos) != 1 {
		t.Fatalf("list shows %d limits, want the family only", len(infos))
	}
}

func TestTheFirstUseOfAKeyBeyondTheLiveKeyBoundIsRefused(t *testing.T) {
	st, now := fakeState(t)
	st.maxKeys = 2
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	acquireOK(t, st, *now, "tenant.a", messages.AcquireRequest{Occupy: 1})
	b := acquireOK(t, st, *now, "tenant.b", messages.AcquireRequest{Occupy: 1})
	r := st.acquire(*now, "tenant.c", &messages.AcquireRequest{Occupy: 1}, messages.JSON, &effects{})
	if r.reply.Error == nil || r.reply.Error.Code != messages.CodeTooManyWaiters {
		t.Fatalf("third key: %+v, want too_many_waiters", r.reply)
	}
	st.release(*now, b.lease.id, &effects{})
	if r := acquireOK(t, st, *now, "tenant.c", messages.AcquireRequest{Occupy: 1}); r.lease == nil {
		t.Fatalf("third key after one went idle: %+v", r.reply)
	}
	if st.liveKeys != 2 {
		t.Fatalf("live keys counted %d, want 2", st.liveKeys)
	}
}

func TestFamilyInfoListsTheFirstKeysInOrder(t *testing.T) {
	m := map[string]*limitState{}
	for _, k := range []string{"m", "c", "x", "a", "q", "b", "z", "d"} {
		m[k] = nil
	}
	if got := fmt.Sprint(firstKeys(m, 3)); got != "[a b c]" {
		t.Fatalf("first 3 keys %s, want [a b c]", got)
	}
	if got := fmt.Sprint(firstKeys(m, 100)); got != "[a b c d m q x z]" {
		t.Fatalf("all keys %s", got)
	}
}

func TestAKeyOfAnInactiveFamilyIsNotEnforcedNorKept(t *testing.T) {
	st, now := fakeState(t)
	st.maxKeys = 1
	if r := st.create(*now, "tenant", &messages.CreateRequest{Limit: 1, PerKey: true, Active: new(bool)}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
	for _, key := range []string{"a", "b"} {
		r := acquireOK(t, st, *now, "tenant."+key, messages.AcquireRequest{Occupy: 1})
		if r.reply.Status != messages.StatusGranted || r.lease != nil || len(r.reply.Inactive) != 1 {
			t.Fatalf("key %s of an inactive family: %+v, want granted unenforced (inactive)", key, r.reply)
		}
	}
	if st.liveKeys != 0 || st.limits["tenant.a"] != nil {
		t.Fatalf("an inactive family's keys were kept: %d live", st.liveKeys)
	}
}

func TestErrorsNameAKeyByItsFamilyAndKey(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 1, 0)
	acquireOK(t, st, *now, "tenant.acme", messages.AcquireRequest{Occupy: 1})
	r := st.acquire(*now, "tenant.acme", &messages.AcquireRequest{Occupy: 1, Try: true}, messages.JSON, &effects{})
	if r.reply.Error == nil || !strings.Contains(r.reply.Error.Message, `limit "tenant" key "acme" has 0 of 1 slots free`) {
		t.Fatalf("refusal %+v: want it to name the family and the key", r.reply.Error)
	}
}

// TestGetOfAMalformedKeyIsInvalidName: a key has the characters of a name
// and a subject with more tokens than "<name>.<key>" is invalid_name
// (PROTOCOL.md §15). get takes the subject's tokens after the verb as they
// come (get.tenant.a.b, get.tenant.%, a subject ending in a dot): it must
// refuse them, not describe an idle key that no acquisition could create.
func TestGetOfAMalformedKeyIsInvalidName(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 2, 0)
	for _, ref := range []string{"tenant.a.b", "tenant.", "tenant.a%b", "tenant.a*"} {
		r := st.get(*now, ref)
		if r.Error == nil || r.Error.Code != messages.CodeInvalidName {
			key := ""
			if r.Limit != nil {
				key = r.Limit.Key
			}
			t.Errorf("get %q: error %v, key %q in the answer; want invalid_name", ref, r.Error, key)
		}
	}
}

// TestDeletingAFamilyStopsItsKeysTimers: the broker's timers follow the
// keys live, not the keys seen (PROTOCOL.md §15: memory grows with the keys
// in use only). A rate key that is draining has a timer for when it has
// drained; a key dropped when idle stops it, and so must a key deleted with
// its family: otherwise every key of a deleted family keeps a timer (and an
// entry in the Broker's wakers) until its bucket would have drained, which
// on a slow rate limit is hours to years away.
func TestDeletingAFamilyStopsItsKeysTimers(t *testing.T) {
	url := foServer(t)
	b := foLeader(t, url)
	c, err := client.New(foConn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One slot per key, draining in 1000 s.
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey(), client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	const keys = 20
	for i := range keys {
		if err := c.TryRateLimit(ctx, "tenant", 1, client.WithKey(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	wakers := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.wakers)
	}
	if n := wakers(); n != keys {
		t.Fatalf("%d timers for %d draining keys before the delete", n, keys)
	}
	if _, err := c.DeleteLimit(ctx, "tenant"); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	live := len(b.st.limits)
	b.mu.Unlock()
	if n := wakers(); n != 0 {
		t.Fatalf("after deleting the family (%d limits live) the broker still keeps %d key timers, each until its bucket would have drained (1000 s)", live, n)
	}
}
