package client_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
	f := startTry(t)
	if f.req.Notify == "" || f.req.Key == "" {
		t.Fatalf("a try sent notify %q key %q: notices could not reach it", f.req.Notify, f.req.Key)
	}
	f.notice(t, "early", wrongKey(f.req.Key), "forged")
	f.notice(t, "early", f.req.Key, "maintenance")
	f.notice(t, "early", wrongKey(f.req.Key), "forged after")
	lease := f.grant(t)
	select {
	case <-lease.Done():
	case <-testContext(t).Done():
		t.Fatal("the lease revoked before it reached the client is still held")
	}
	if err := lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
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
	f := startTry(t)
	f.notice(t, "early", f.req.Key, "maintenance")
	// The forger knows neither the lease nor the key: it makes up both.
	for i := range 100 {
		f.notice(t, fmt.Sprintf("forged-%d", i), wrongKey(f.req.Key), "forged")
	}
	lease := f.grant(t)
	// The lease is ended when TryAcquire hands it over, or never (its
	// renewal, 20 s away, is answered by the stand-in).
	select {
	case <-lease.Done():
	default:
		t.Fatal("the genuine notice that overtook the lease was pushed out by 100 forged ones: the revoked lease is still held")
	}
	if err := lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Fatalf("lease error %v, want ErrLeaseRevoked", err)
	}
}

// tryInFlight is a TryAcquire of one slot of db whose request a stand-in
// holds unanswered: notices can be published to its notify subject before
// its lease reaches the client (grant).
type tryInFlight struct {
	test *nats.Conn
	m    *nats.Msg
	req  messages.AcquireRequest
	acks <-chan *nats.Msg
	done chan acquireResult
}

func startTry(t *testing.T) *tryInFlight {
	t.Helper()
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	f := &tryInFlight{test: connect(t, s), done: make(chan acquireResult, 1)}
	reqs := standIn(t, f.test, "slotbroker.v1.acquire.db")
	f.acks = standIn(t, f.test, "acks.>")
	ctx := testContext(t)
	go func() {
		l, err := c.TryAcquire(ctx, "db", 1)
		f.done <- acquireResult{l, err}
	}()
	f.m = next(t, reqs, "acquire request")
	decode(t, f.m, &f.req)
	return f
}

// notice publishes a revocation notice of lease id with key to the try's notify subject.
func (f *tryInFlight) notice(t *testing.T, id, key, reason string) {
	t.Helper()
	publish(t, f.test, f.req.Notify, "", messages.RevokedNotice{Revoked: id, Key: key, Reason: reason})
}

// grant answers the try with lease "early", once the client has handled
// what was published to its inbox before (it handles its inbox in order:
// its answer to a grant of no wait of its own comes after), and returns
// the lease.
func (f *tryInFlight) grant(t *testing.T) *client.Lease {
	t.Helper()
	publish(t, f.test, f.req.Notify, "acks.sync", messages.Grant{WaitID: "nobody", Key: f.req.Key,
		Lease: &messages.LeaseGrant{ID: "x", Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000}})
	next(t, f.acks, "answer to the sync grant")
	respond(t, f.m, messages.AcquireReply{Status: messages.StatusGranted, WaitID: f.req.WaitID,
		Lease: &messages.LeaseGrant{ID: "early", Token: 1, Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000, ExpiresAt: time.Now().Add(time.Minute)}})
	r := <-f.done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.lease
}
