package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestLimitsStoredBeforeTheNewBoundsStayEnforced: the broker before issue
// 10 took any limit >= 0 and any finite decay >= 0, e.g. a bandwidth rate
// limit of 1e9 bytes draining at 1e8 bytes a second, or 3e9 slots. The new
// bounds (limit <= 1e9, decay <= 1e6 and >= limit/100 years) are also
// applied to the records loaded at start (broker/store.go checkLimitRecord),
// and a record outside them is "skipped": after an upgrade the limit is
// simply gone. Nothing tells its users: an acquisition (not strict) is
// granted "missing", with no lease and nothing enforced, its holders' leases
// lose the limit, and its record stays in the bucket for a create to
// overwrite. A stored limit must keep being enforced (or the broker must
// refuse to start, saying which record is out of bounds), never vanish.
func TestLimitsStoredBeforeTheNewBoundsStayEnforced(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	c := ev.e.Client
	if _, err := c.CreateLimit(ctx, "egress", 1_000_000_000, client.WithSlotDecay(1_000_000)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "big", 1_000_000_000); err != nil {
		t.Fatal(err)
	}
	rsStopBroker(t, ev)

	// Rewrite the records as the broker before the bounds stored them.
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(name string, change func(map[string]any)) {
		e, err := kv.Get(ctx, "limit."+name)
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]any
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		change(rec)
		data, _ := json.Marshal(rec)
		if _, err := kv.Put(ctx, "limit."+name, data); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("egress", func(r map[string]any) { r["slot_decay_per_second"] = 100_000_000 })
	rewrite("big", func(r map[string]any) { r["limit"] = 3_000_000_000 })
	rsStartBroker(t, ev)

	for _, name := range []string{"egress", "big"} {
		if _, err := c.GetLimit(ctx, name); err != nil {
			t.Errorf("get %s after the upgrade: %v: the stored limit vanished", name, err)
		}
		l, err := c.TryAcquire(ctx, name, 1)
		if err != nil {
			t.Errorf("try-acquire %s after the upgrade: %v", name, err)
			continue
		}
		if l.Unlimited() {
			t.Errorf("try-acquire %s after the upgrade: granted with nothing enforced (the limit is treated as missing)", name)
		}
		_ = l.Release(ctx)
	}
}
