package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestRetriedAcquireIsAnsweredOnlyOnceItsLeaseIsStored: an acquisition is
// answered once its append is stored (PROTOCOL.md §12). A client whose
// request timed out while that append was still being retried sends it
// again with the same wait_id; the retry finds the lease in memory and must
// wait for the same append, not answer "granted" at once: a crash before
// the append is stored would leave a holder the restarted broker does not
// know about, and its slots granted twice.
func TestRetriedAcquireIsAnsweredOnlyOnceItsLeaseIsStored(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	admin := ev.client()
	if _, err := admin.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	begin, end := envJournalOutage(t, ev)
	begin()
	nc := ev.conn()
	subject := ev.e.Broker.Subjects().Verb("acquire", "db")
	body := []byte(`{"occupy":1,"try":true,"ttl_ms":3600000,"wait_id":"retried-acquisition-1"}`)
	_ = requestAsync(nc, subject, body, 30*time.Second) // its append waits for the journal
	eventually(t, 10*time.Second, "the acquisition applied in memory", func() bool {
		info, err := admin.GetLimit(ctx, "db")
		return err == nil && info.HoldersTotal == 1
	})
	// The client's request timed out; it retries with the same wait_id.
	r := <-requestAsync(nc, subject, body, 3*time.Second)
	granted := r.err == nil && strings.Contains(string(r.msg.Data), `"granted"`)
	if !granted {
		return // it waits for the append (or is refused): nothing answered before it is stored
	}
	// The journal is still out: kill the broker before the append is stored.
	rsKillBroker(t, ev)
	end()
	rsStartBroker(t, ev)
	other, err := ev.client().TryAcquire(ctx, "db", 1, client.WithLeaseTTL(time.Hour))
	if err == nil {
		t.Fatalf("the retried acquisition was answered %s while its append was not stored; after a crash the restarted broker granted db (limit 1) again to lease %s: two holders of one slot",
			r.msg.Data, other.ID())
	}
	t.Fatalf("the retried acquisition was answered %s while its append was not stored (after the crash: %v)", r.msg.Data, err)
}
