package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// sentAcquire is an acquisition request as the stand-in got it.
type sentAcquire struct {
	subject string
	req     messages.AcquireRequest
}

// grantingStandIn answers every acquisition under "slotbroker.v1." at once
// as granted (no lease: nothing enforced; every admission of a counted
// try), and records it. Until hold is closed, it keeps the first request
// unanswered. It returns the recorded requests.
func grantingStandIn(t *testing.T, nc *nats.Conn, hold <-chan struct{}) func() []sentAcquire {
	t.Helper()
	var mu sync.Mutex
	var sent []sentAcquire
	var first atomic.Bool
	handle := func(m *nats.Msg) {
		var req messages.AcquireRequest
		if _, err := messages.Decode(m.Data, &req); err != nil {
			t.Errorf("decode %s: %v", m.Subject, err)
			return
		}
		mu.Lock()
		sent = append(sent, sentAcquire{m.Subject, req})
		mu.Unlock()
		if hold != nil && !first.Swap(true) {
			<-hold
		}
		data, _ := messages.Marshal(messages.JSON, messages.AcquireReply{Status: messages.StatusGranted, WaitID: req.WaitID, Admitted: max(req.Count, 1)})
		_ = m.Respond(data)
	}
	for _, subject := range []string{"slotbroker.v1.acquire.>", "slotbroker.v1.acquire-many.>"} {
		// Its own goroutine per subscription: the held first request does
		// not hold the others' answers on the other subject.
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) { handle(m) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []sentAcquire {
		mu.Lock()
		defer mu.Unlock()
		return append([]sentAcquire(nil), sent...)
	}
}

// TestAcquisitionSubjectNamesItsLimits: every kind of acquisition naming
// several limits (WithNames) goes to "<prefix>.v1.acquire-many.<names>",
// the named limit first, then the others in the order given, each once,
// with no names in the body; one naming a single limit (also when WithNames
// repeats it) goes to "<prefix>.v1.acquire.<name>".
func TestAcquisitionSubjectNamesItsLimits(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	recorded := grantingStandIn(t, connect(t, s), nil)
	ctx := testContext(t)
	kinds := map[string]func(opts ...client.AcquireOption) error{
		"Acquire": func(opts ...client.AcquireOption) error {
			l, err := c.Acquire(ctx, "a", 1, opts...)
			if err == nil {
				err = l.Release(ctx)
			}
			return err
		},
		"TryAcquire": func(opts ...client.AcquireOption) error {
			l, err := c.TryAcquire(ctx, "a", 1, opts...)
			if err == nil {
				err = l.Release(ctx)
			}
			return err
		},
		"Do": func(opts ...client.AcquireOption) error {
			return c.Do(ctx, "a", 1, func(context.Context) error { return nil }, opts...)
		},
		"RateLimit":    func(opts ...client.AcquireOption) error { return c.RateLimit(ctx, "a", 1, opts...) },
		"TryRateLimit": func(opts ...client.AcquireOption) error { return c.TryRateLimit(ctx, "a", 1, opts...) },
	}
	cases := []struct {
		names []string
		want  string
	}{
		{nil, "slotbroker.v1.acquire.a"},
		{[]string{"a"}, "slotbroker.v1.acquire.a"},
		{[]string{"b"}, "slotbroker.v1.acquire-many.a.b"},
		{[]string{"c", "a", "b", "c"}, "slotbroker.v1.acquire-many.a.c.b"},
	}
	for kind, acquire := range kinds {
		for _, tc := range cases {
			before := len(recorded())
			if err := acquire(client.WithNames(tc.names...)); err != nil {
				t.Fatalf("%s with names %q: %v", kind, tc.names, err)
			}
			sent := recorded()[before:]
			if len(sent) != 1 || sent[0].subject != tc.want || len(sent[0].req.Names) != 0 {
				t.Fatalf("%s with names %q sent %+v; want one request on %s with no names in the body", kind, tc.names, sent, tc.want)
			}
		}
	}
}

// TestCoalescedRateCallsGoToAcquireMany: RateLimit and TryRateLimit calls
// naming several limits that the client coalesces into counted requests
// send those to the acquire-many subject too.
func TestCoalescedRateCallsGoToAcquireMany(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	hold := make(chan struct{})
	recorded := grantingStandIn(t, connect(t, s), hold)
	ctx := testContext(t)
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })

	const calls = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*calls)
	// RateLimit: the first call's request is held at the stand-in while
	// the others take their places behind it; they then go as one counted try.
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.RateLimit(ctx, "a", 1, client.WithNames("b"))
		}()
		<-registered
	}
	close(hold)
	wg.Wait()
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.TryRateLimit(ctx, "a", 1, client.WithNames("b"))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	counted := false
	for _, s := range recorded() {
		if s.subject != "slotbroker.v1.acquire-many.a.b" || len(s.req.Names) != 0 {
			t.Fatalf("request on %s with names %q; want acquire-many.a.b with none", s.subject, s.req.Names)
		}
		counted = counted || s.req.Count > 1
	}
	if !counted {
		t.Fatal("no counted request was sent: the calls were not coalesced")
	}
}

// TestWithdrawnMultiLimitAcquisitionCancelsOnItsFirstLimit: a queued
// acquisition of several limits that its caller gives up is withdrawn on
// "<prefix>.v1.cancel.<first name>".
func TestWithdrawnMultiLimitAcquisitionCancelsOnItsFirstLimit(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	test := connect(t, s)
	reqs := standIn(t, test, "slotbroker.v1.acquire-many.>")
	cancels := standIn(t, test, "slotbroker.v1.cancel.>")
	ctx, giveUp := context.WithCancel(testContext(t))
	done := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "a", 1, client.WithNames("b"))
		done <- err
	}()
	m := next(t, reqs, "acquire-many request")
	var req messages.AcquireRequest
	decode(t, m, &req)
	respond(t, m, messages.AcquireReply{Status: messages.StatusQueued, WaitID: req.WaitID, Position: 1})
	giveUp()
	cm := next(t, cancels, "cancel request")
	var cr messages.CancelRequest
	decode(t, cm, &cr)
	if cm.Subject != "slotbroker.v1.cancel.a" || cr.WaitID != req.WaitID {
		t.Fatalf("cancel of wait %q on %s; want wait %q on slotbroker.v1.cancel.a", cr.WaitID, cm.Subject, req.WaitID)
	}
	respond(t, cm, messages.CancelReply{Cancelled: true})
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire given up: %v", err)
	}
}

// TestMoreThanMaxNamesRefusedLocally: an acquisition of more than
// messages.MaxNames distinct limits fails with ErrInvalidArgument without a
// request; MaxNames (counting repeats once) is sent.
func TestMoreThanMaxNamesRefusedLocally(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	recorded := grantingStandIn(t, connect(t, s), nil)
	ctx := testContext(t)
	var names []string
	for i := range messages.MaxNames {
		names = append(names, "n"+strings.Repeat("x", i))
	}
	// "a" and MaxNames others: one too many.
	err := c.RateLimit(ctx, "a", 1, client.WithNames(names...))
	if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "maximum") {
		t.Fatalf("RateLimit of %d limits: %v; want ErrInvalidArgument naming the maximum", messages.MaxNames+1, err)
	}
	if _, err := c.TryAcquire(ctx, "a", 1, client.WithNames(names...)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("TryAcquire of %d limits: %v; want ErrInvalidArgument", messages.MaxNames+1, err)
	}
	if n := len(recorded()); n != 0 {
		t.Fatalf("%d requests sent for refused acquisitions", n)
	}
	// The first name again, and a repeat: MaxNames limits.
	if err := c.RateLimit(ctx, names[0], 1, client.WithNames(append(names, names[1])...)); err != nil {
		t.Fatalf("RateLimit of %d limits: %v", messages.MaxNames, err)
	}
}

// TestHolderLongerThanMaxHolderLenRefusedLocally: a holder description
// longer than messages.MaxHolderLen fails with ErrInvalidArgument without a
// request.
func TestHolderLongerThanMaxHolderLenRefusedLocally(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	recorded := grantingStandIn(t, connect(t, s), nil)
	ctx := testContext(t)
	long := strings.Repeat("h", messages.MaxHolderLen+1)
	if _, err := c.Acquire(ctx, "a", 1, client.WithHolder(long)); !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "holder") {
		t.Fatalf("Acquire with a %d-byte holder: %v; want ErrInvalidArgument about the holder", len(long), err)
	}
	if err := c.TryRateLimit(ctx, "a", 1, client.WithHolder(long)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("TryRateLimit with a %d-byte holder: %v; want ErrInvalidArgument", len(long), err)
	}
	if n := len(recorded()); n != 0 {
		t.Fatalf("%d requests sent for refused acquisitions", n)
	}
	if err := c.TryRateLimit(ctx, "a", 1, client.WithHolder(long[1:])); err != nil {
		t.Fatalf("TryRateLimit with a %d-byte holder: %v", messages.MaxHolderLen, err)
	}
}

// TestLeaseTTLUnderAMillisecondRefusedLocally: the wire carries a lease
// TTL in whole milliseconds and 0 means the broker's default, so a TTL
// under 1 ms (which would become 0) fails with ErrInvalidArgument without a
// request; 1 ms is sent as 1.
func TestLeaseTTLUnderAMillisecondRefusedLocally(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	recorded := grantingStandIn(t, connect(t, s), nil)
	ctx := testContext(t)
	for _, ttl := range []time.Duration{time.Nanosecond, 500 * time.Microsecond, time.Millisecond - 1} {
		if _, err := c.TryAcquire(ctx, "a", 1, client.WithLeaseTTL(ttl)); !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "1ms") {
			t.Fatalf("TryAcquire with WithLeaseTTL(%v): %v; want ErrInvalidArgument saying 1ms", ttl, err)
		}
		if _, err := c.Acquire(ctx, "a", 1, client.WithLeaseTTL(ttl)); !errors.Is(err, client.ErrInvalidArgument) {
			t.Fatalf("Acquire with WithLeaseTTL(%v): %v; want ErrInvalidArgument", ttl, err)
		}
	}
	if n := len(recorded()); n != 0 {
		t.Fatalf("%d requests sent for refused acquisitions", n)
	}
	if _, err := c.TryAcquire(ctx, "a", 1, client.WithLeaseTTL(time.Millisecond)); err != nil {
		t.Fatalf("TryAcquire with WithLeaseTTL(1ms): %v", err)
	}
	if sent := recorded(); len(sent) != 1 || sent[0].req.TTLMillis != 1 {
		t.Fatalf("TryAcquire with WithLeaseTTL(1ms) sent %+v; want one request with ttl_ms 1", sent)
	}
}

// TestMultiLimitAcquireOnBroker: a broker grants an acquisition of several
// limits sent to acquire-many, and a queued one too (its grant carries the
// key). Needs the broker's acquire-many endpoint and grant keys.
func TestMultiLimitAcquireOnBroker(t *testing.T) {
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	c, _ := newClient(t, e)
	ctx := testContext(t)
	for _, n := range []string{"x", "y"} {
		if _, err := c.CreateLimit(ctx, n, 1); err != nil {
			t.Fatal(err)
		}
	}
	l, err := c.Acquire(ctx, "x", 1, client.WithNames("y", "x"))
	if err != nil {
		t.Fatalf("Acquire of x and y: %v", err)
	}
	if got := strings.Join(l.Names(), ","); got != "x,y" {
		t.Fatalf("lease on %q; want x,y", got)
	}
	queued := make(chan struct{})
	done := make(chan acquireResult, 1)
	go func() {
		l, err := c.Acquire(ctx, "y", 1, client.WithNames("x"), client.WithQueued(func(client.Queued) { close(queued) }))
		done <- acquireResult{l, err}
	}()
	select {
	case <-queued:
	case r := <-done:
		t.Fatalf("second Acquire of x and y while held: %v, %v; want it queued", r.lease, r.err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("queued Acquire of y and x: %v", r.err)
	}
	if err := r.lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
