package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// A broker starts and serves whatever its bucket holds: records that an
// older broker stored from a hostile request (a waiter whose notify is a
// 5,000-byte subject, or one under the service prefix or in $KV), a limit
// record overwritten with something else, or plain garbage are logged and
// skipped. Before, such a waiter was granted again at every start, the grant
// closed the broker's connection, and every restart exited.
func TestStoredRecordsThatCannotBeServedAreSkippedAtStart(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	c := ev.e.Client
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "other", 1); err != nil {
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
	waiter := func(id, notify string) []byte {
		b, _ := json.Marshal(map[string]any{"id": id, "names": []string{"db"}, "occupy": 1, "ttl_ms": 30000,
			"since": time.Now(), "notify": notify, "order": 1})
		return b
	}
	rsStopBroker(t, ev)
	for key, val := range map[string][]byte{
		"wait.longnotify":  waiter("longnotify", "_INBOX."+strings.Repeat("x", 5000)),
		"wait.servicesubj": waiter("servicesubj", "slotbroker.v1.delete.other"),
		"wait.kvsubj":      waiter("kvsubj", "$KV.slotbroker.limit.other"),
		"wait.garbage":     []byte("not json"),
		"limit.evil":       []byte(`{"name":"slotbroker","type":"io.nats.micro.v1.info_response","endpoints":[]}`),
	} {
		if _, err := kv.Put(ctx, key, val); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	rsStartBroker(t, ev)

	info, err := c.GetLimit(ctx, "db")
	if err != nil {
		t.Fatalf("get db after the start: %v", err)
	}
	if info.WaitersTotal != 0 || info.HoldersTotal != 0 {
		t.Fatalf("db has %d waiters and %d holders: the unservable records were loaded", info.WaitersTotal, info.HoldersTotal)
	}
	if _, err := c.GetLimit(ctx, "evil"); err == nil {
		t.Fatal("a limit record that no broker wrote was loaded as limit evil")
	}
	limits, err := c.ListLimits(ctx)
	if err != nil || len(limits) != 2 {
		t.Fatalf("list after the start: %d limits, %v; want db and other", len(limits), err)
	}
	// And it serves: a fresh acquisition on db is granted and released.
	l, err := ev.client().Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatalf("acquire db: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
