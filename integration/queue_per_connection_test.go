package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestQueueBoundsHoldForOneConnection: the bounds on the queue (PROTOCOL
// §3.1: --max-waiters-per-inbox, and "an inbox that leaves 2 grants in a
// row unanswered loses its other queued acquisitions") are meant to keep
// one client from filling the queue and from stalling everybody behind one
// grant timeout per waiter (issue 10, "What was found" 4). The broker keys
// both on the notify subject without its last token. But the requester
// chooses that token: the notify rule only asks for two tokens after the
// inbox prefix of the reply subject, so one connection of the confined user
// app-db (which may subscribe to all of _INBOX.app-db.>) gives each
// acquisition an inbox of its own (nc.NewInbox() per waiter). Then neither
// bound applies to it: it queues 20 waiters with a cap of 5, and a good
// client queued behind them waits for 20 unanswered grants, not 2.
//
// The second case needs no subscription at all: NATS does not check a
// request's reply subject, so app-db sends its acquisitions with reply
// subjects outside every inbox ("stall<i>.r.r", notify "stall<i>.n.w").
// The broker may not publish there (its permissions allow _INBOX.>): such
// a grant would be dropped by the server and hold the queue for a grant
// timeout each, so the broker refuses a notify outside its notify roots.
func TestQueueBoundsHoldForOneConnection(t *testing.T) {
	x := newAuthEnv(t, 0, "--max-waiters-per-inbox", "5", "--grant-timeout", "200ms")
	ctx := ctxT(t, 3*time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	t.Run("OneInboxTokenPerAcquisition", func(t *testing.T) { queueOwnInboxTokens(t, x) })
	t.Run("NotifyWhereTheBrokerMayNotPublish", func(t *testing.T) { queueUnpublishableNotify(t, x) })
	x.restart(t)
	x.mustServe(t, "after the restart")
}

// goodClientBehind queues a good ops client behind want waiters, releases
// holder and returns how long the good client then waited for its grant.
func goodClientBehind(t *testing.T, x *authEnv, holder *client.Lease, want int) time.Duration {
	ctx := ctxT(t, 3*time.Minute)
	good := x.client(t, userOps)
	type result struct {
		l   *client.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := good.Acquire(ctx, "db", 1)
		res <- result{l, err}
	}()
	eventually(t, 30*time.Second, "the good client queued behind the connection's waiters", func() bool {
		return x.limit(t, "db").WaitersTotal == want+1
	})
	released := time.Now()
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		t.Fatal("the good client's Acquire did not return")
	}
	if r.err != nil {
		t.Fatalf("the good client's Acquire: %v", r.err)
	}
	waited := time.Since(released)
	if err := r.l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	return waited
}

// queueUnpublishableNotify: 10 acquisitions of one app-db connection with
// reply and notify subjects the broker may not publish to, no subscription.
func queueUnpublishableNotify(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 3*time.Minute)
	holder, err := x.ops.Acquire(ctx, "db", 1, client.WithLeaseTTL(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	bad := x.connect(t, userAppDB)
	const n = 10
	for i := range n {
		req := queuedAcquire(fmt.Sprintf("stall%d.n.%s", i, nuid.Next()))
		data, err := messages.Marshal(messages.JSON, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := bad.PublishRequest(verbSubject("acquire", "db"), fmt.Sprintf("stall%d.r.r", i), data); err != nil {
			t.Fatal(err)
		}
	}
	// A try on the same subject, answered: the acquisitions before it were
	// applied (queued, or refused) by then.
	try := rawRequest[messages.AcquireReply](t, bad, verbSubject("acquire", "db"), messages.JSON, tryAcquire())
	wantCode(t, "a try on the full db", try.Error, messages.CodeNoSlots)
	// Each would cost a grant timeout when the server drops its grant: the
	// broker refuses a notify outside its notify roots (default _INBOX).
	queued := x.limit(t, "db").WaitersTotal
	if queued != 0 {
		t.Errorf("%d acquisitions with notify subjects the broker may not publish to were queued; want them refused", queued)
	}
	goodClientBehind(t, x, holder, queued)
}

// queueOwnInboxTokens: 20 acquisitions of one app-db connection, each with
// an inbox of its own, subscribed and never answered.
func queueOwnInboxTokens(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 3*time.Minute)
	holder, err := x.ops.Acquire(ctx, "db", 1, client.WithLeaseTTL(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}

	// One connection of app-db; one inbox per acquisition, each subscribed
	// and never answered.
	bad := x.connect(t, userAppDB)
	var subs []*nats.Subscription
	queued := 0
	const tries = 20
	for i := range tries {
		inbox := bad.NewInbox()
		sub, err := bad.SubscribeSync(inbox + ".*")
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
		req := queuedAcquire(inbox + "." + nuid.Next())
		reply := rawRequest[messages.AcquireReply](t, bad, verbSubject("acquire", "db"), messages.JSON, req)
		switch {
		case reply.Error == nil && reply.Status == messages.StatusQueued:
			queued++
		case reply.Error != nil && reply.Error.Code == messages.CodeTooManyWaiters:
		default:
			t.Fatalf("acquire %d of the one connection: %+v", i+1, reply)
		}
	}
	if queued > 5 {
		t.Errorf("one connection queued %d acquisitions with --max-waiters-per-inbox 5 (one inbox token per acquisition)", queued)
	}

	waited := goodClientBehind(t, x, holder, queued)

	// Every grant pushed to the connection came before the good client's.
	if err := bad.Flush(); err != nil {
		t.Fatal(err)
	}
	grants := 0
	for _, sub := range subs {
		n, _, _ := sub.Pending()
		for range n {
			m, err := sub.NextMsg(time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var g messages.Grant
			if _, err := messages.Decode(m.Data, &g); err == nil && g.Error == nil && m.Reply != "" {
				grants++
			}
		}
	}
	if grants > 2 {
		t.Errorf("one connection left %d grants unanswered (200ms each) before the good client was granted after %v; want its waiters dropped after 2",
			grants, waited.Round(time.Millisecond))
	}
}
