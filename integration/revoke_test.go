package integration

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRevokeEndsTheHolderLeaseAndGrantsTheWaiter: a lease revoked by
// another client frees its slot for the waiter at once, the revoked event
// carries the reason and the revoker, and the holder learns at its next
// renewal: its Done closes and Err matches ErrLeaseRevoked (and
// ErrLeaseLost, which slotctl run and existing code handle).
func TestRevokeEndsTheHolderLeaseAndGrantsTheWaiter(t *testing.T) {
	ev := newEnv(t)
	holderC, waiterC, admin := ev.client(), ev.client(), ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "rv", 1); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Second // the broker's minimum: renewals every ~333 ms
	held, err := holderC.Acquire(ctx, "rv", 1, client.WithLeaseTTL(ttl), client.WithHolder("job-7"))
	if err != nil {
		t.Fatal(err)
	}

	queued := make(chan struct{})
	type result struct {
		l   *client.Lease
		err error
	}
	waited := make(chan result, 1)
	go func() {
		l, err := waiterC.Acquire(ctx, "rv", 1, client.WithQueued(func(int) { close(queued) }))
		waited <- result{l, err}
	}()
	<-queued

	nc := ev.conn()
	sub, err := nc.SubscribeSync(messages.NewSubjects("").Event("rv", messages.EventRevoked))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	revokedAt := time.Now()
	ok, err := admin.RevokeLease(ctx, "rv", held.ID(), "stuck migration", client.RevokedBy("ops on call"))
	if err != nil || !ok {
		t.Fatalf("RevokeLease: %v, %v; want true, nil", ok, err)
	}

	// The waiter gets the slot.
	select {
	case r := <-waited:
		if r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
		defer func() { _ = r.l.Release(ctx) }()
	case <-ctx.Done():
		t.Fatal("the waiter was not granted the revoked lease's slot")
	}

	// The event names the lease, the reason and who revoked it.
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no revoked event: %v", err)
	}
	var e messages.Event
	if err := json.Unmarshal(m.Data, &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != messages.EventRevoked || e.Limit != "rv" || e.LeaseID != held.ID() || e.Reason != "stuck migration" ||
		e.By != "ops on call" || e.Holder != "job-7" || e.Occupy != 1 {
		t.Errorf("revoked event %+v", e)
	}

	// The holder learns at its next renewal, well before its lease would
	// have expired uncontested (a third of the TTL; the bound allows slack).
	select {
	case <-held.Done():
	case <-time.After(ttl + time.Second):
		t.Fatalf("the holder's Done did not close within %v of the revocation", ttl+time.Second)
	}
	if err := held.Err(); !errors.Is(err, client.ErrLeaseRevoked) || !errors.Is(err, client.ErrLeaseLost) {
		t.Errorf("holder's Err after revocation: %v; want ErrLeaseRevoked and ErrLeaseLost", err)
	}
	t.Logf("holder learned of the revocation %v after it", time.Since(revokedAt))
	if err := held.Release(ctx); err != nil {
		t.Errorf("Release of a revoked lease: %v; want nil", err)
	}

	// A second revocation finds nothing.
	if ok, err := admin.RevokeLease(ctx, "rv", held.ID(), ""); ok || err != nil {
		t.Errorf("second RevokeLease: %v, %v; want false, nil", ok, err)
	}
}

// TestRevokeOutOfScopeIsForbidden: a lease is revoked only through its own
// limit's subject, as it is released; the lease stays held.
func TestRevokeOutOfScopeIsForbidden(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	for _, n := range []string{"mine", "theirs"} {
		if _, err := c.CreateLimit(ctx, n, 1); err != nil {
			t.Fatal(err)
		}
	}
	l, err := c.Acquire(ctx, "mine", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Release(ctx) }()
	ok, err := c.RevokeLease(ctx, "theirs", l.ID(), "")
	if ok || !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("RevokeLease through another limit: %v, %v; want false and ErrPermissionDenied", ok, err)
	}
	info, err := c.GetLimit(ctx, "mine")
	if err != nil || len(info.Holders) != 1 || info.Holders[0].LeaseID != l.ID() {
		t.Fatalf("after a forbidden revocation: %+v, %v; want the lease still held", info, err)
	}
	select {
	case <-l.Done():
		t.Fatalf("the lease ended after a forbidden revocation: %v", l.Err())
	default:
	}
}

// TestRevokeUnknownLeaseIsFalse: revoking a lease nobody holds answers
// revoked false without an error; fields out of bounds are refused.
func TestRevokeUnknownLeaseIsFalse(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "rv", 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.RevokeLease(ctx, "rv", "NOSUCHLEASE", "cleanup"); ok || err != nil {
		t.Errorf("RevokeLease of an unknown lease: %v, %v; want false, nil", ok, err)
	}
	if _, err := c.RevokeLease(ctx, "rv", "X", strings.Repeat("r", messages.MaxReasonLen+1)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("RevokeLease with a long reason: %v; want ErrInvalidArgument", err)
	}
	// The broker checks too, whatever the client.
	nc := ev.conn()
	for _, body := range []string{
		`{"lease_id":"X","reason":"` + strings.Repeat("r", messages.MaxReasonLen+1) + `"}`,
		`{"lease_id":"X","by":"a\u0007b"}`,
		`{"lease_id":"a.b"}`,
		`{}`,
	} {
		m, err := nc.RequestWithContext(ctx, messages.NewSubjects("").Verb(messages.VerbRevoke, "rv"), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var r messages.RevokeReply
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Error == nil || r.Revoked {
			t.Errorf("revoke %.60s: reply %s (%v); want an error", body, m.Data, err)
		}
	}
}
