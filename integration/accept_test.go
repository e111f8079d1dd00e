package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// Found in review of "a pending lease's record covers its acceptance within
// the grant timeout": settle pushes a grant also when the put of its pending
// lease's record failed (a stream without a leader for longer than the
// publish retries), and an acceptance within the slack wrote only the purge
// of wait.<id>. After a blip that dropped the grant's put but was over when
// the waiter accepted, the bucket held neither the lease nor the waiter: a
// restarted broker granted the slot again while the waiter still held it.
// An acceptance now rewrites a lease whose put failed.
func TestAcceptedLeaseWhosePutFailedSurvivesRestart(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	if _, err := ev.client().CreateLimit(ctx, "x", 1); err != nil {
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

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	outage, restored := kvOutage(ctx, t, js)

	// w accepts its grant once the blip is over (well within the grant timeout).
	accepted := make(chan messages.Grant, 1)
	sub, err := nc.Subscribe("_INBOX.accept.w", func(m *nats.Msg) {
		var g messages.Grant
		_ = json.Unmarshal(m.Data, &g)
		restored()
		_ = m.Respond([]byte(`{"accept":true}`))
		accepted <- g
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
	// The stream loses its subjects (a leader blip) before a's lease expires:
	// the expiry's writes, w's pending lease among them, fail.
	outage()

	var g messages.Grant
	select {
	case g = <-accepted:
	case <-time.After(15 * time.Second):
		t.Fatal("w was not granted")
	}
	if g.Lease == nil {
		t.Fatalf("w's grant has no lease: %+v", g)
	}
	// The acceptance (its purge of wait.acceptW) is stored.
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "wait.acceptW purged", func() bool {
		_, err := kv.Get(ctx, "wait.acceptW")
		return err != nil
	})
	// The acceptance stored the lease its grant's failed put did not.
	eventually(t, 10*time.Second, "w's lease stored", func() bool {
		_, err := kv.Get(ctx, "lease."+g.Lease.ID)
		return err == nil
	})

	rsCrashBroker(t, ev)

	// w accepted a 30 s lease a moment ago: nobody else may get x now.
	if r := request(`{"occupy":1,"holder":"c","try":true}`); r.Error == nil {
		_, gerr := kv.Get(ctx, "lease."+g.Lease.ID)
		t.Fatalf("c was granted x (limit 1) while w holds it (accepted, deadline %v): two holders; w's lease record: %v",
			g.Lease.ExpiresAt, gerr)
	}
}
