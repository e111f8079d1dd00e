package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// grantAckLostEnv queues a raw waiter (one whose acceptances never reach
// the broker: it takes grants and does not answer) behind a holder of a
// limit of 1, and a Go client's waiter behind it, then releases the holder.
// It returns the grant the raw waiter got, a function that renews its lease
// (the reply), and the Go waiter's lease when it gets one.
func grantAckLostEnv(t *testing.T) (*env, messages.Grant, func() messages.RenewReply, chan *client.Lease) {
	ev := newEnv(t, broker.WithGrantTimeout(200*time.Millisecond))
	ctx := ctxT(t, time.Minute)
	if _, err := ev.e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holder, err := ev.e.Client.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	inbox := nats.NewInbox()
	grants := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(inbox+".*", grants); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(messages.AcquireRequest{Occupy: 1, TTLMillis: 30_000, WaitID: "W1", Key: "KEYKEYKEYKEYKEYKEYKEYKEYKE", Notify: inbox + ".W1"})
	m, err := nc.RequestWithContext(ctx, ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "db"), req)
	if err != nil {
		t.Fatal(err)
	}
	var queued messages.AcquireReply
	if _, err := messages.Decode(m.Data, &queued); err != nil || queued.Status != messages.StatusQueued {
		t.Fatalf("the raw waiter's acquire: %s (%v), want queued", m.Data, err)
	}
	next := make(chan *client.Lease, 1)
	waiter := ev.client()
	go func() {
		l, err := waiter.Acquire(ctx, "db", 1)
		if err == nil {
			next <- l
		}
	}()
	eventually(t, 10*time.Second, "two waiters queued", func() bool {
		info, err := ev.e.Client.GetLimit(ctx, "db")
		return err == nil && info.WaitersTotal == 2
	})
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var g messages.Grant
	select {
	case gm := <-grants:
		if _, err := messages.Decode(gm.Data, &g); err != nil || g.Lease == nil {
			t.Fatalf("grant %s: %v", gm.Data, err)
		}
	case <-ctx.Done():
		t.Fatal("no grant pushed to the raw waiter")
	}
	renew := func() messages.RenewReply {
		data, _ := json.Marshal(messages.RenewRequest{LeaseID: g.Lease.ID})
		rm, err := nc.RequestWithContext(ctx, ev.e.Broker.Subjects().Verb(messages.VerbRenew, "db"), data)
		if err != nil {
			t.Fatal(err)
		}
		var rr messages.RenewReply
		if _, err := messages.Decode(rm.Data, &rr); err != nil {
			t.Fatalf("renew reply %s: %v", rm.Data, err)
		}
		return rr
	}
	return ev, g, renew, next
}

// TestRenewalConfirmsAGrantWhoseAcceptanceWasLost: a waiter that took its
// pushed grant but whose GrantAck never reached the broker (its NATS server
// died, a network blip) renews the lease before using it, as the Go client
// does: the renewal accepts the pending lease, so the broker does not pass
// its slots on when the grant timeout passes, and the next waiter gets them
// only after its release.
func TestRenewalConfirmsAGrantWhoseAcceptanceWasLost(t *testing.T) {
	ev, g, renew, next := grantAckLostEnv(t)
	if rr := renew(); rr.Error != nil {
		t.Fatalf("the renewal of a pushed, unanswered grant: %+v, want the lease held", rr.Error)
	}
	// The grant timeout (200ms) passes several times: the lease stays held.
	ctx := ctxT(t, time.Minute)
	eventually(t, 10*time.Second, "the grant's timeout passed", func() bool {
		info, err := ev.e.Client.GetLimit(ctx, "db")
		return err == nil && info.HoldersTotal == 1 && info.WaitersTotal == 1 && info.Holders[0].LeaseID == g.Lease.ID
	})
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		select {
		case l := <-next:
			t.Fatalf("the slot went to the next waiter (token %d) while the renewed lease (token %d) holds it", l.Token(), g.Lease.Token)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if rr := renew(); rr.Error != nil {
		t.Fatalf("a later renewal: %+v, want the lease still held", rr.Error)
	}
	rel, _ := json.Marshal(messages.ReleaseRequest{LeaseID: g.Lease.ID})
	if _, err := ev.conn().RequestWithContext(ctx, ev.e.Broker.Subjects().Verb(messages.VerbRelease, "db"), rel); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-next:
		if l.Token() <= g.Lease.Token {
			t.Fatalf("the next lease's token %d is not above %d", l.Token(), g.Lease.Token)
		}
	case <-ctx.Done():
		t.Fatal("the next waiter never got the slot after the release")
	}
}

// TestUnconfirmedGrantIsPassedOnAndItsRenewalRefused: a waiter that neither
// answers its grant nor renews it within the grant timeout loses it: the
// slots go to the next waiter, and a late renewal is refused
// (lease_not_found), so a client that confirms its grants never uses one
// the broker passed on.
func TestUnconfirmedGrantIsPassedOnAndItsRenewalRefused(t *testing.T) {
	_, g, renew, next := grantAckLostEnv(t)
	select {
	case l := <-next:
		if l.Token() <= g.Lease.Token {
			t.Fatalf("the next lease's token %d is not above %d", l.Token(), g.Lease.Token)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the slots of an unanswered grant were not passed on")
	}
	if rr := renew(); rr.Error == nil || rr.Error.Code != messages.CodeLeaseNotFound {
		t.Fatalf("a late renewal of a grant passed on: %+v, want lease_not_found", rr)
	}
}
