package client_test

import (
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// randomText is what crypto/rand.Text returns: 26 base32 characters.
var randomText = regexp.MustCompile(`^[A-Z2-7]{26}$`)

// acquireResult is what an Acquire returned.
type acquireResult struct {
	lease *client.Lease
	err   error
}

// queuedAcquire starts an Acquire of one slot of "db" on c and answers its
// request, taken from the stand-in's reqs, as queued; it returns the
// request and where the Acquire's result will arrive.
func queuedAcquire(t *testing.T, c *client.Client, reqs <-chan *nats.Msg) (messages.AcquireRequest, <-chan acquireResult) {
	t.Helper()
	ctx := testContext(t)
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.Acquire(ctx, "db", 1)
		done <- acquireResult{l, err}
	}()
	m := next(t, reqs, "acquire request")
	var req messages.AcquireRequest
	decode(t, m, &req)
	respond(t, m, messages.AcquireReply{Status: messages.StatusQueued, WaitID: req.WaitID, Position: 1})
	return req, done
}

// grantOf is a grant of a lease with id for req.
func grantOf(req messages.AcquireRequest, key, id string) messages.Grant {
	return messages.Grant{WaitID: req.WaitID, Key: key,
		Lease: &messages.LeaseGrant{ID: id, Token: 1, Names: []string{"db"}, Occupy: 1, TTLMillis: 60_000}}
}

// wrongKey is a key of the right form that is not key.
func wrongKey(key string) string {
	if strings.HasSuffix(key, "A") {
		return key[:len(key)-1] + "B"
	}
	return key[:len(key)-1] + "A"
}

// TestQueuedAcquireCarriesRandomWaitIDAndKey: a queued acquisition sends a
// wait id and a grant key from crypto/rand (26 base32 characters, a valid
// key), fresh for each acquisition; a try sends them too, for the notice of a revocation.
func TestQueuedAcquireCarriesRandomWaitIDAndKey(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	ctx := testContext(t)

	seen := map[string]bool{}
	for range 2 {
		req, done := queuedAcquire(t, c, reqs)
		if !randomText.MatchString(req.WaitID) || !randomText.MatchString(req.Key) {
			t.Fatalf("wait id %q, key %q: want 26 base32 characters from crypto/rand each", req.WaitID, req.Key)
		}
		if e := messages.CheckKey(req.Key); e != nil {
			t.Fatalf("key %q: %v", req.Key, e)
		}
		if seen[req.WaitID] || seen[req.Key] || req.WaitID == req.Key {
			t.Fatalf("wait id %q or key %q seen before", req.WaitID, req.Key)
		}
		seen[req.WaitID], seen[req.Key] = true, true
		publish(t, test, req.Notify, "", grantOf(req, req.Key, "lease-"+req.WaitID))
		if r := <-done; r.err != nil {
			t.Fatal(r.err)
		}
	}

	tried := make(chan error, 1)
	go func() {
		_, err := c.TryAcquire(ctx, "db", 1)
		tried <- err
	}()
	m := next(t, reqs, "try request")
	var req messages.AcquireRequest
	decode(t, m, &req)
	// A try queues nothing, but the notify subject and key tell the holder
	// of the lease it gets of a revocation (PROTOCOL.md §5.9).
	if !randomText.MatchString(req.WaitID) || !randomText.MatchString(req.Key) || req.Key == req.WaitID ||
		!strings.HasSuffix(req.Notify, "."+req.WaitID) {
		t.Errorf("try: wait id %q, key %q, notify %q; want a random wait id and key, and notify <inbox>.<wait id>", req.WaitID, req.Key, req.Notify)
	}
	respond(t, m, messages.AcquireReply{Error: messages.Errorf(messages.CodeNoSlots, "full")})
	if err := <-tried; !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("TryAcquire answered no_slots: %v", err)
	}
}

// TestRetriedAcquireResendsWaitIDAndKey: a request no broker answered is
// sent again with the same wait id, key and notify subject.
func TestRetriedAcquireResendsWaitIDAndKey(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s), client.WithRequestTimeout(200*time.Millisecond))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	ctx := testContext(t)
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.Acquire(ctx, "db", 1)
		done <- acquireResult{l, err}
	}()
	var first, again messages.AcquireRequest
	decode(t, next(t, reqs, "acquire request"), &first) // left unanswered: it times out
	m := next(t, reqs, "retried acquire request")
	decode(t, m, &again)
	if again.WaitID != first.WaitID || again.Key != first.Key || again.Notify != first.Notify || first.Key == "" {
		t.Fatalf("retry sent wait id %q key %q notify %q; the first sent %q %q %q", again.WaitID, again.Key, again.Notify, first.WaitID, first.Key, first.Notify)
	}
	respond(t, m, messages.AcquireReply{Status: messages.StatusQueued, WaitID: again.WaitID, Position: 1})
	publish(t, test, again.Notify, "", grantOf(again, first.Key, "the-lease"))
	r := <-done
	if r.err != nil || r.lease.ID() != "the-lease" {
		t.Fatalf("Acquire: %v, %v; want the lease granted for the retried request", r.lease, r.err)
	}
}

// TestGrantWithoutTheSentKeyIsDroppedUnanswered: grants published to a
// client's inbox for a wait of its own, without the key the client sent
// (none, or another), with a reply subject or without, are not returned by
// Acquire and get no answer (the forger cannot learn anything from one);
// the client warns once, naming the subject. The broker's grant, with the
// key, still works.
func TestGrantWithoutTheSentKeyIsDroppedUnanswered(t *testing.T) {
	s := plainServer(t)
	logs := &logRecorder{}
	c := clientOn(t, connect(t, s), client.WithLogger(slog.New(logs)))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	acks := standIn(t, test, "acks.>")

	req, done := queuedAcquire(t, c, reqs)
	forged := []struct{ key, reply string }{
		{"", ""},
		{"", "acks.forged.no-key"},
		{wrongKey(req.Key), ""},
		{wrongKey(req.Key), "acks.forged.wrong-key"},
		{req.Key[:len(req.Key)-1], "acks.forged.short-key"},
	}
	for i, f := range forged {
		publish(t, test, req.Notify, f.reply, grantOf(req, f.key, "forged-"+string(rune('a'+i))))
	}
	// A forged failure must not end the wait either.
	publish(t, test, req.Notify, "acks.forged.error", messages.Grant{WaitID: req.WaitID, Key: wrongKey(req.Key),
		Error: messages.Errorf(messages.CodeNotFound, "forged")})
	select {
	case r := <-done:
		t.Fatalf("Acquire returned %v, %v on forged grants", r.lease, r.err)
	default:
	}
	// The client handles its inbox's messages in order, and its answers
	// arrive in order: the first answer must be the one to the broker.
	publish(t, test, req.Notify, "acks.broker", grantOf(req, req.Key, "real"))
	ack := next(t, acks, "answer to the grant")
	if ack.Subject != "acks.broker" {
		t.Fatalf("the client answered a forged grant (on %s)", ack.Subject)
	}
	var a messages.GrantAck
	decode(t, ack, &a)
	if !a.Accept {
		t.Fatal("the broker's grant was declined")
	}
	r := <-done
	if r.err != nil || r.lease.ID() != "real" {
		t.Fatalf("Acquire: lease %v, %v; want the broker's lease %q", r.lease, r.err, "real")
	}
	warnings := logs.matching(slog.LevelWarn, "grant")
	if len(warnings) != 1 || !strings.Contains(warnings[0], req.Notify) {
		t.Fatalf("warnings %q; want one naming the subject %s", warnings, req.Notify)
	}
}

// TestRegrantOfAHeldLeaseNeedsTheSentKey: a grant pushed again for a held
// lease (after a broker restart) is accepted with the key the request was
// sent with, and dropped unanswered without it.
func TestRegrantOfAHeldLeaseNeedsTheSentKey(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s), client.WithLogger(slog.New(&logRecorder{})))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire.db")
	acks := standIn(t, test, "acks.>")

	req, done := queuedAcquire(t, c, reqs)
	publish(t, test, req.Notify, "acks.first", grantOf(req, req.Key, "held"))
	if ack := next(t, acks, "answer to the grant"); ack.Subject != "acks.first" {
		t.Fatalf("answer on %s", ack.Subject)
	}
	if r := <-done; r.err != nil || r.lease.ID() != "held" {
		t.Fatalf("Acquire: %v, %v", r.lease, r.err)
	}
	publish(t, test, req.Notify, "acks.forged", grantOf(req, wrongKey(req.Key), "held"))
	publish(t, test, req.Notify, "acks.again", grantOf(req, req.Key, "held"))
	ack := next(t, acks, "answer to the grant pushed again")
	var a messages.GrantAck
	decode(t, ack, &a)
	if ack.Subject != "acks.again" || !a.Accept {
		t.Fatalf("answer on %s, accept %v; want the grant pushed again with the key accepted and the forged one unanswered", ack.Subject, a.Accept)
	}
}

// TestBrokerGrantCarriesTheSentKey: a broker's pushed grant echoes the key
// of the queued request, and the client takes it. Needs the broker's side
// of grant keys.
func TestBrokerGrantCarriesTheSentKey(t *testing.T) {
	e := embedded(t)
	c, _ := newClient(t, e)
	ctx := testContext(t)
	if _, err := c.CreateLimit(ctx, "q", 1); err != nil {
		t.Fatal(err)
	}
	held, err := c.Acquire(ctx, "q", 1)
	if err != nil {
		t.Fatal(err)
	}
	// A copy of each request, and of the grants pushed to the inbox.
	watch, err := nats.Connect(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Close)
	reqs := standIn(t, watch, "slotbroker.v1.acquire.q")
	grants := standIn(t, watch, "_INBOX.>")

	queued := make(chan struct{})
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.Acquire(ctx, "q", 1, client.WithTimeout(20*time.Second), client.WithQueued(func(client.Queued) { close(queued) }))
		done <- acquireResult{l, err}
	}()
	var req messages.AcquireRequest
	decode(t, next(t, reqs, "acquire request"), &req)
	select {
	case <-queued:
	case r := <-done:
		t.Fatalf("Acquire of a held slot: %v, %v; want it queued", r.lease, r.err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		m := next(t, grants, "grant pushed to the notify subject")
		if m.Subject != req.Notify {
			continue // a reply to another request
		}
		var g messages.Grant
		decode(t, m, &g)
		if g.WaitID != req.WaitID || g.Key != req.Key {
			t.Fatalf("grant for wait %q with key %q; the request sent wait %q, key %q", g.WaitID, g.Key, req.WaitID, req.Key)
		}
		break
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("queued Acquire after the release: %v", r.err)
	}
	if err := r.lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
