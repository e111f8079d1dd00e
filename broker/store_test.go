package broker

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// A stored waiter or lease whose notify subject the broker must not publish
// to (under the service prefix, or under $) is skipped at start, whatever
// wrote it: an older broker that did not check notify, or a hand-edited
// store. Records are decoded in parts on every core; the check must use the
// service prefix in each.
func TestStoredNotifyUnderTheServicePrefixIsSkipped(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := map[string][]byte{
		limitKey("db"): mustJSON(limitRecord{Limit: messages.Limit{Name: "db", Limit: 1, Active: true}}),
	}
	bad := []string{"slotbroker.v1.delete.other", "$KV.slotbroker.limit.other", "_INBOX.ok.w"}
	for i, notify := range bad {
		w := &waiter{id: "w" + string(rune('a'+i)), names: []string{"db"}, occupy: 1, ttl: time.Second, since: now, notify: notify, order: uint64(i + 1)}
		recs[waiterKey(w.id)] = w.record()
	}
	var skipped []string
	loaded := decodeRecords(recs, messages.DefaultPrefix, func(msg, key string, _ any) { skipped = append(skipped, key) })
	if len(loaded.waiters) != 1 || loaded.waiters[0].Notify != "_INBOX.ok.w" {
		t.Fatalf("loaded waiters %+v, want only the one notified in _INBOX", loaded.waiters)
	}
	if len(skipped) != 2 {
		t.Fatalf("skipped %v, want the two waiters whose notify is reserved", skipped)
	}
}
