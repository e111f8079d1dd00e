package client_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRevokedNoticeArrivingBeforeTheLeaseStillEndsIt: the broker pushes a
// revocation's notice once the revocation is stored, which can be before
// the client has the lease in hand (the acquire reply still on its way).
// Such a notice, with the acquisition's key, must end the lease as soon as
// the client has it, not be dropped (the lease would run on until its next
// renewal).
func TestRevokedNoticeArrivingBeforeTheLeaseStillEndsIt(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	acks := standIn(t, test, "acks.>")
	ctx := testContext(t)
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.TryAcquire(ctx, "db", 1)
		done <- acquireResult{l, err}
	}()
	m := next(t, reqs, "acquire request")
	var req messages.AcquireRequest
	decode(t, m, &req)
	if req.Notify == "" || req.Key == "" {
		t.Fatalf("a try sent notify %q key %q: notices could not reach it", req.Notify, req.Key)
	}
	publish(t, test, req.Notify, "", messages.RevokedNotice{Revoked: "early", Key: wrongKey(req.Key), Reason: "forged"})
	publish(t, test, req.Notify, "", messages.RevokedNotice{Revoked: "early", Key: req.Key, Reason: "maintenance"})
	publish(t, test, req.Notify, "", messages.RevokedNotice{Revoked: "early", Key: wrongKey(req.Key), Reason: "forged after"})
	// The client handles its inbox in order: its answer to a grant of no
	// wait of its own comes after it handled the notices.
	publish(t, test, req.Notify, "acks.sync", messages.Grant{WaitID: "nobody", Key: req.Key,
		Lease: &messages.LeaseGrant{ID: "x", Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000}})
	next(t, acks, "answer to the sync grant")
	respond(t, m, messages.AcquireReply{Status: messages.StatusGranted, WaitID: req.WaitID,
		Lease: &messages.LeaseGrant{ID: "early", Token: 1, Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000, ExpiresAt: time.Now().Add(time.Minute)}})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	select {
	case <-r.lease.Done():
	case <-ctx.Done():
		t.Fatal("the lease revoked before it reached the client is still held")
	}
	if err := r.lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Fatalf("lease error %v, want ErrLeaseRevoked", err)
	}
}

// TestForgedNoticesOfOtherLeasesDoNotPushOutAnEarlyGenuineOne: a genuine
// notice that overtook its lease is kept until the lease arrives. Somebody
// who can publish to the client's inbox (§3.2 of PROTOCOL.md) but does not
// know the acquisition's key must not be able to make the client forget it
// by publishing notices of made-up leases meanwhile: the revoked lease
// would then run on until its next renewal, as if no notice had come.
func TestForgedNoticesOfOtherLeasesDoNotPushOutAnEarlyGenuineOne(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	acks := standIn(t, test, "acks.>")
	ctx := testContext(t)
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.TryAcquire(ctx, "db", 1)
		done <- acquireResult{l, err}
	}()
	m := next(t, reqs, "acquire request")
	var req messages.AcquireRequest
	decode(t, m, &req)
	publish(t, test, req.Notify, "", messages.RevokedNotice{Revoked: "early", Key: req.Key, Reason: "maintenance"})
	// The forger knows neither the lease nor the key: it makes up both.
	for i := range 100 {
		publish(t, test, req.Notify, "", messages.RevokedNotice{Revoked: fmt.Sprintf("forged-%d", i), Key: wrongKey(req.Key), Reason: "forged"})
	}
	publish(t, test, req.Notify, "acks.sync", messages.Grant{WaitID: "nobody", Key: req.Key,
		Lease: &messages.LeaseGrant{ID: "x", Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000}})
	next(t, acks, "answer to the sync grant")
	respond(t, m, messages.AcquireReply{Status: messages.StatusGranted, WaitID: req.WaitID,
		Lease: &messages.LeaseGrant{ID: "early", Token: 1, Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000, ExpiresAt: time.Now().Add(time.Minute)}})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The lease is ended when TryAcquire hands it over, or never (its
	// renewal, 20 s away, is answered by the stand-in).
	select {
	case <-r.lease.Done():
	default:
		t.Fatal("the genuine notice that overtook the lease was pushed out by 100 forged ones: the revoked lease is still held")
	}
	if err := r.lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Fatalf("lease error %v, want ErrLeaseRevoked", err)
	}
}
