package client_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// permissionServer has the users "admin" (may do anything) and "app",
// who may publish only "slotbroker.v1.acquire.db" and subscribe to
// "_INBOX.>", and "boxed", who may subscribe only to "boxed.>" and publish
// under "slotbroker.>".
func permissionServer(t *testing.T) *server.Server {
	return plainServer(t,
		&server.User{Username: "admin", Password: "admin"},
		&server.User{Username: "app", Password: "app", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.v1.acquire.db"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
		&server.User{Username: "boxed", Password: "boxed", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"boxed.>"}},
		}},
	)
}

// TestPublishDeniedIsPermissionDenied: a request the NATS user may not
// publish fails with ErrPermissionDenied naming the subject (not with a
// timeout), while a call on a subject it may publish to, in flight at the
// same time, goes on; the connection's own error handler still gets the
// violation.
func TestPublishDeniedIsPermissionDenied(t *testing.T) {
	s := permissionServer(t)
	violations := make(chan error, 16)
	nc := connect(t, s, nats.UserInfo("app", "app"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		violations <- err
	}))
	c := clientOn(t, nc)
	admin := connect(t, s, nats.UserInfo("admin", "admin"))
	reqs := standIn(t, admin, "slotbroker.v1.acquire.db")
	ctx := testContext(t)

	// An allowed acquisition, held at the stand-in while the others fail.
	allowed := make(chan acquireResult, 1)
	go func() {
		l, err := c.Acquire(ctx, "db", 1, client.WithTimeout(10*time.Second))
		allowed <- acquireResult{l, err}
	}()
	held := next(t, reqs, "acquire request on db")

	denied := []struct {
		call    func() error
		subject string
	}{
		{func() error { _, err := c.Acquire(ctx, "other", 1, client.WithTimeout(10*time.Second)); return err }, "slotbroker.v1.acquire.other"},
		{func() error { return c.RateLimit(ctx, "other", 1, client.WithTimeout(10*time.Second)) }, "slotbroker.v1.acquire.other"},
		{func() error { _, err := c.TryAcquire(ctx, "db", 1, client.WithNames("x")); return err }, "slotbroker.v1.acquire-many.db.x"},
		{func() error { _, err := c.GetLimit(ctx, "db"); return err }, "slotbroker.v1.get.db"},
	}
	for _, d := range denied {
		err := d.call()
		if !errors.Is(err, client.ErrPermissionDenied) || !strings.Contains(err.Error(), `"`+d.subject+`"`) || !strings.Contains(err.Error(), "publish permission") {
			t.Fatalf("request on %s, which the user may not publish to: %v; want ErrPermissionDenied naming the subject", d.subject, err)
		}
	}

	var req messages.AcquireRequest
	decode(t, held, &req)
	respond(t, held, messages.AcquireReply{Status: messages.StatusGranted, WaitID: req.WaitID})
	if r := <-allowed; r.err != nil {
		t.Fatalf("Acquire on db, which the user may publish to, in flight meanwhile: %v", r.err)
	}
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("the connection's error handler got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection's own error handler got no permissions violation")
	}
}

// TestInboxSubscribeDeniedIsPermissionDenied: New fails with
// ErrPermissionDenied, saying to set nats.CustomInboxPrefix, when the NATS
// user may not subscribe to the grant inbox; with the prefix the user may
// subscribe to, New succeeds and its requests get answers.
func TestInboxSubscribeDeniedIsPermissionDenied(t *testing.T) {
	s := permissionServer(t)
	nc := connect(t, s, nats.UserInfo("boxed", "boxed"))
	_, err := client.New(nc)
	if !errors.Is(err, client.ErrPermissionDenied) || !strings.Contains(err.Error(), "subscribe to _INBOX.") ||
		!strings.Contains(err.Error(), "CustomInboxPrefix") {
		t.Fatalf("New for a user who may not subscribe to _INBOX: %v; want ErrPermissionDenied saying to set nats.CustomInboxPrefix", err)
	}

	boxed := connect(t, s, nats.UserInfo("boxed", "boxed"), nats.CustomInboxPrefix("boxed"))
	c := clientOn(t, boxed)
	admin := connect(t, s, nats.UserInfo("admin", "admin"))
	reqs := standIn(t, admin, "slotbroker.v1.acquire.db")
	req, done := queuedAcquire(t, c, reqs)
	if !strings.HasPrefix(req.Notify, "boxed.") {
		t.Fatalf("notify %q is not under the custom inbox prefix", req.Notify)
	}
	publish(t, admin, req.Notify, "", grantOf(req, req.Key, "granted"))
	if r := <-done; r.err != nil || r.lease.ID() != "granted" {
		t.Fatalf("Acquire with the custom inbox prefix: %v, %v", r.lease, r.err)
	}
}

// TestBrokerErrorCodesMapToSentinels: the broker's forbidden and
// too_many_waiters errors match ErrPermissionDenied and ErrTooManyWaiters.
func TestBrokerErrorCodesMapToSentinels(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	reqs := standIn(t, connect(t, s), "slotbroker.v1.acquire.db")
	ctx := testContext(t)
	for code, want := range map[messages.Code]error{
		messages.CodeForbidden:      client.ErrPermissionDenied,
		messages.CodeTooManyWaiters: client.ErrTooManyWaiters,
	} {
		done := make(chan error, 1)
		go func() {
			_, err := c.Acquire(ctx, "db", 1)
			done <- err
		}()
		respond(t, next(t, reqs, "acquire request"), messages.AcquireReply{Error: messages.Errorf(code, "refused")})
		if err := <-done; !errors.Is(err, want) {
			t.Fatalf("reply with code %s: %v; want %v", code, err, want)
		}
	}
}

// TestConnectionErrorHandlerStillCalledAfterClose: after Close the Client's
// part of the error handler does nothing, and the connection's own handler
// still gets every error.
func TestConnectionErrorHandlerStillCalledAfterClose(t *testing.T) {
	s := permissionServer(t)
	violations := make(chan error, 16)
	nc := connect(t, s, nats.UserInfo("app", "app"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		violations <- err
	}))
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("denied", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("the connection's error handler got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection's own error handler got nothing after Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Acquire(ctx, "db", 1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
}

// TestRefusedGrantAcceptanceIsPermissionDenied: a user whose permissions
// lack allow_responses cannot answer a pushed grant: the server refuses
// the acceptance, so the broker never has it and passes the slots on. The
// Acquire that was granted fails with ErrPermissionDenied saying so, not
// with a lease; a later acquisition that would queue fails at once without
// a request, while a try, which needs no grant, is still sent.
func TestRefusedGrantAcceptanceIsPermissionDenied(t *testing.T) {
	s := plainServer(t,
		&server.User{Username: "admin", Password: "admin"},
		&server.User{Username: "noresp", Password: "noresp", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.v1.acquire.db", "slotbroker.v1.cancel.db"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
	)
	c := clientOn(t, connect(t, s, nats.UserInfo("noresp", "noresp")))
	admin := connect(t, s, nats.UserInfo("admin", "admin"))
	reqs := standIn(t, admin, "slotbroker.v1.acquire.db")
	acks := standIn(t, admin, "broker-inbox.grant")

	req, done := queuedAcquire(t, c, reqs)
	publish(t, admin, req.Notify, "broker-inbox.grant", grantOf(req, req.Key, "refused"))
	r := <-done
	if r.err == nil {
		t.Fatalf("Acquire whose acceptance the server refused returned lease %s", r.lease.ID())
	}
	if !errors.Is(r.err, client.ErrPermissionDenied) || !strings.Contains(r.err.Error(), "allow_responses") {
		t.Fatalf("Acquire whose acceptance the server refused: %v; want ErrPermissionDenied naming allow_responses", r.err)
	}
	select {
	case m := <-acks:
		t.Fatalf("the server let the acceptance through: %q", m.Data)
	default:
	}

	ctx := testContext(t)
	if _, err := c.Acquire(ctx, "db", 1, client.WithTimeout(10*time.Second)); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("Acquire after a refused acceptance: %v; want ErrPermissionDenied at once", err)
	}
	if n := len(reqs); n != 0 {
		t.Fatalf("Acquire after a refused acceptance sent %d requests", n)
	}
	tried := make(chan acquireResult, 1)
	go func() {
		l, err := c.TryAcquire(ctx, "db", 1)
		tried <- acquireResult{l, err}
	}()
	var try messages.AcquireRequest
	m := next(t, reqs, "try request")
	decode(t, m, &try)
	respond(t, m, messages.AcquireReply{Status: messages.StatusGranted, WaitID: try.WaitID})
	if r := <-tried; r.err != nil {
		t.Fatalf("TryAcquire after a refused acceptance: %v", r.err)
	}
}

// TestAcceptedGrantWithAllowResponsesIsALease: with allow_responses the
// acceptance goes through and every queued Acquire gets its lease.
func TestAcceptedGrantWithAllowResponsesIsALease(t *testing.T) {
	s := plainServer(t,
		&server.User{Username: "admin", Password: "admin"},
		&server.User{Username: "resp", Password: "resp", Permissions: &server.Permissions{
			// Renew too: a pushed grant is confirmed by a renewal.
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.v1.acquire.db", "slotbroker.v1.renew.db"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			Response:  &server.ResponsePermission{MaxMsgs: 1},
		}},
	)
	c := clientOn(t, connect(t, s, nats.UserInfo("resp", "resp")))
	admin := connect(t, s, nats.UserInfo("admin", "admin"))
	reqs := standIn(t, admin, "slotbroker.v1.acquire.db")
	for i := range 3 {
		req, done := queuedAcquire(t, c, reqs)
		id := fmt.Sprintf("lease-%d", i)
		data, err := messages.Marshal(messages.JSON, grantOf(req, req.Key, id))
		if err != nil {
			t.Fatal(err)
		}
		ack, err := admin.Request(req.Notify, data, 10*time.Second)
		if err != nil {
			t.Fatalf("grant %d: no acceptance: %v", i, err)
		}
		var a messages.GrantAck
		decode(t, ack, &a)
		if !a.Accept {
			t.Fatalf("grant %d declined", i)
		}
		r := <-done
		if r.err != nil || r.lease.ID() != id {
			t.Fatalf("Acquire %d: %v, %v; want lease %s", i, r.lease, r.err, id)
		}
	}
}

// TestOneErrorDispatcherPerConnectionAndNoneForClosedOnes: Clients made
// and closed on one connection share one dispatcher of its async errors,
// and a process that makes and closes many connections (closing their
// Clients first, or not at all) keeps no dispatcher for any of them.
func TestOneErrorDispatcherPerConnectionAndNoneForClosedOnes(t *testing.T) {
	s := plainServer(t)
	before := client.Dispatchers()
	nc := connect(t, s)
	for range 100 {
		c, err := client.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Other tests' closed connections may go meanwhile: the count may drop.
	if n := client.Dispatchers() - before; n > 1 || !client.HasDispatcher(nc) {
		t.Fatalf("100 Clients made and closed on one connection: %d more dispatchers, one for the connection: %t; want 1, true",
			n, client.HasDispatcher(nc))
	}
	nc.Close()

	const conns = 100
	for i := range conns {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := c.Close(); err != nil { // closed before its connection
				t.Fatal(err)
			}
		} // else left open: its connection's close ends it
		nc.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for client.Dispatchers() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections made and closed: %d dispatchers left, %d before", conns+1, client.Dispatchers(), before)
		}
		runtime.GC() // a closed connection's entry goes when it is collected, at the latest
		time.Sleep(10 * time.Millisecond)
	}
}
