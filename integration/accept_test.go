package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// TestGrantHeldBackByJournalOutageSurvivesRestart: a queued waiter is
// granted its lease only once the journal append that stores the lease is
// stored, so that every lease a waiter accepted is one a restarted broker
// knows. (Under the previous per-key store a grant was pushed although the
// put of its lease had failed, and a restarted broker granted the slot again
// while the waiter still held it: two holders of a 1-slot limit.) A journal
// outage when the holder's lease expires holds the grant back; once the
// outage ends the waiter is granted, accepts, and the stored state has its
// lease and no longer its wait; after a crash-restart nobody else gets the
// slot while it holds it.
func TestGrantHeldBackByJournalOutageSurvivesRestart(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	admin := ev.client()
	if _, err := admin.CreateLimit(ctx, "x", 1); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	subjects := ev.e.Broker.Subjects()
	request := func(body string) messages.AcquireReply {
		t.Helper()
		resp, err := nc.Request(subjects.Verb(messages.VerbAcquire, "x"), []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r messages.AcquireReply
		if err := json.Unmarshal(resp.Data, &r); err != nil {
			t.Fatalf("%s: %v", resp.Data, err)
		}
		return r
	}
	begin, end := envJournalOutage(t, ev)

	// w accepts every grant pushed to it.
	granted := make(chan messages.Grant, 4)
	sub, err := nc.Subscribe("_INBOX.accept.w", func(m *nats.Msg) {
		var g messages.Grant
		_ = json.Unmarshal(m.Data, &g)
		_ = m.Respond([]byte(`{"accept":true}`))
		granted <- g
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// a holds x for the minimum ttl; w queues behind it.
	if r := request(`{"occupy":1,"holder":"a","ttl_ms":1000}`); r.Lease == nil {
		t.Fatalf("a: %+v", r)
	}
	if r := request(`{"occupy":1,"holder":"w","wait_id":"acceptW","notify":"_INBOX.accept.w"}`); r.Status != messages.StatusQueued {
		t.Fatalf("w: %+v", r)
	}
	// The journal loses its leader before a's lease expires: the expiry
	// and w's grant are made in memory but cannot be stored.
	begin()
	eventually(t, 15*time.Second, "a's lease expired and w out of the queue (in memory)", func() bool {
		info := rsGet(t, admin, "x")
		for _, h := range info.Holders {
			if h.Holder == "a" {
				return false
			}
		}
		return len(info.Waiters) == 0
	})
	select {
	case g := <-granted:
		t.Fatalf("w was granted %+v while the journal could not store its lease", g.Lease)
	default:
	}
	end()

	var g messages.Grant
	select {
	case g = <-granted:
	case <-time.After(20 * time.Second):
		t.Fatal("w was not granted once the journal outage ended")
	}
	if g.Lease == nil {
		t.Fatalf("w's grant has no lease: %+v", g)
	}
	// What a restart loads: w's lease, and (once its acceptance is stored)
	// no waiter.
	if _, ok := storedRecords(t, nc)["lease."+g.Lease.ID]; !ok {
		t.Fatalf("w was granted lease %s, which is not stored", g.Lease.ID)
	}
	eventually(t, 10*time.Second, "w's acceptance stored", func() bool {
		recs := storedRecords(t, nc)
		_, waiting := recs["wait.acceptW"]
		_, held := recs["lease."+g.Lease.ID]
		if !held {
			t.Fatalf("w's lease %s is no longer stored after it accepted", g.Lease.ID)
		}
		return !waiting
	})

	rsCrashBroker(t, ev)

	// w accepted a 30 s lease a moment ago: nobody else may get x now.
	info := rsGet(t, admin, "x")
	if len(info.Holders) != 1 || info.Holders[0].LeaseID != g.Lease.ID {
		t.Fatalf("after the crash holders %+v, want w's lease %s alone", info.Holders, g.Lease.ID)
	}
	if r := request(`{"occupy":1,"holder":"c","try":true}`); r.Error == nil {
		t.Fatalf("c was granted x (limit 1) while w holds it (accepted, deadline %v): two holders", g.Lease.ExpiresAt)
	}
	if len(granted) > 0 {
		t.Fatalf("w was granted again after the restart: %+v", <-granted)
	}
}
