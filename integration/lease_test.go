package integration

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

var lsSubj = messages.NewSubjects("")

// lsQuiet is a client logger that drops the expected warnings.
var lsQuiet = client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

// lsClient is a client with its own connection, returned too.
func lsClient(t *testing.T, ev *env, opts ...client.Option) (*client.Client, *nats.Conn) {
	t.Helper()
	nc := ev.conn()
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, nc
}

// lsHolder finds a lease among a limit's holders.
func lsHolder(t *testing.T, c *client.Client, name, leaseID string) (messages.Holder, bool) {
	t.Helper()
	info, err := c.GetLimit(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	for _, h := range info.Holders {
		if h.LeaseID == leaseID {
			return h, true
		}
	}
	return messages.Holder{}, false
}

// lsRaw sends a JSON request and decodes the JSON reply.
func lsRaw(t *testing.T, nc *nats.Conn, subject string, req, reply any) {
	t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	if err := json.Unmarshal(msg.Data, reply); err != nil {
		t.Fatalf("reply %s: %v: %s", subject, err, msg.Data)
	}
}

func lsNotDone(t *testing.T, l *client.Lease, what string) {
	t.Helper()
	if err := l.Err(); err != nil {
		t.Fatalf("%s: lease lost: %v", what, err)
	}
	select {
	case <-l.Done():
		t.Fatalf("%s: lease ended", what)
	default:
	}
}

// TestLeaseRenewedWhileHeld: a 2 s lease held for three TTLs stays held.
func TestLeaseRenewedWhileHeld(t *testing.T) {
	const ttl = 2 * time.Second
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "renew", 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l, err := c.Acquire(ctx, "renew", 1, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	h0, ok := lsHolder(t, c, "renew", l.ID())
	if !ok || h0.Token != l.Token() {
		t.Fatalf("lease %s not a holder (token %d): %+v", l.ID(), l.Token(), h0)
	}
	end := start.Add(3 * ttl)
	eventually(t, 6*ttl, "lease held for 3×TTL", func() bool {
		lsNotDone(t, l, "while held")
		h, ok := lsHolder(t, c, "renew", l.ID())
		if !ok {
			t.Fatalf("lease %s no longer a holder after %v", l.ID(), time.Since(start))
		}
		return time.Now().After(end) && l.ExpiresAt().After(end) && h.ExpiresAt.After(end)
	})
	h, _ := lsHolder(t, c, "renew", l.ID())
	if !h.ExpiresAt.After(h0.ExpiresAt.Add(ttl)) {
		t.Fatalf("broker deadline %v not renewed past the first %v", h.ExpiresAt, h0.ExpiresAt)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := lsHolder(t, c, "renew", l.ID()); ok {
		t.Fatal("still a holder after Release")
	}
}

// TestLeaseRenewalSurvivesBrokerOutage: renewals failing while no broker
// runs do not drop the lease; a new broker on the same bucket renews it.
func TestLeaseRenewalSurvivesBrokerOutage(t *testing.T) {
	const ttl = 6 * time.Second
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := admin.CreateLimit(ctx, "outage", 1); err != nil {
		t.Fatal(err)
	}
	c, nc := lsClient(t, ev, lsQuiet)
	l, err := c.Acquire(ctx, "outage", 1, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// Start from a fresh renewal so the whole TTL is ahead.
	e := l.ExpiresAt()
	eventually(t, ttl, "first renewal", func() bool { return l.ExpiresAt().After(e) })

	rsStopBroker(t, ev)
	exp0 := l.ExpiresAt()
	sent := nc.Stats().OutMsgs
	// The holder's connection carries only renewals: two more messages mean a
	// renewal was attempted, found no broker, and was retried.
	eventually(t, ttl, "a renewal failed", func() bool {
		lsNotDone(t, l, "during the outage")
		return nc.Stats().OutMsgs >= sent+2
	})
	if !l.ExpiresAt().Equal(exp0) {
		t.Fatalf("ExpiresAt advanced from %v to %v with no broker", exp0, l.ExpiresAt())
	}
	if !time.Now().Before(exp0) {
		t.Fatalf("the outage outlasted the lease (deadline %v); the test machine is too slow", exp0)
	}

	rsStartBroker(t, ev)
	eventually(t, ttl, "renewal by the new broker", func() bool {
		lsNotDone(t, l, "after the outage")
		return l.ExpiresAt().After(exp0)
	})
	h, ok := lsHolder(t, admin, "outage", l.ID())
	if !ok || h.Token != l.Token() || !h.ExpiresAt.After(exp0) {
		t.Fatalf("after the outage holder %+v (found %v), want token %d expiring after %v", h, ok, l.Token(), exp0)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseTTLOutOfRange(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "ttl", 1); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{500 * time.Millisecond, 48 * time.Hour} {
		if _, err := c.Acquire(ctx, "ttl", 1, client.WithLeaseTTL(ttl)); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("Acquire ttl %v: %v, want ErrInvalidArgument", ttl, err)
		}
		if _, err := c.TryAcquire(ctx, "ttl", 1, client.WithLeaseTTL(ttl)); !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("TryAcquire ttl %v: %v, want ErrInvalidArgument", ttl, err)
		}
		ran := false
		if err := c.Do(ctx, "ttl", 1, func(context.Context) error { ran = true; return nil }, client.WithLeaseTTL(ttl)); !errors.Is(err, client.ErrInvalidArgument) || ran {
			t.Errorf("Do ttl %v: %v (ran %v), want ErrInvalidArgument", ttl, err, ran)
		}
	}
	info, err := c.GetLimit(ctx, "ttl")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Holders) != 0 || len(info.Waiters) != 0 {
		t.Fatalf("refused acquisitions left holders %v waiters %v", info.Holders, info.Waiters)
	}
	// The bounds themselves are accepted.
	for _, ttl := range []time.Duration{time.Second, 24 * time.Hour} {
		l, err := c.TryAcquire(ctx, "ttl", 1, client.WithLeaseTTL(ttl))
		if err != nil {
			t.Fatalf("ttl %v: %v", ttl, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLeaseLostOnDelete: deleting the limit voids the lease; the holder sees
// it on its next renewal, from the broker's answer, not at expiry.
func TestLeaseLostOnDelete(t *testing.T) {
	const ttl = 3 * time.Second
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "void", 1); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, "void", 1, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := c.DeleteLimit(ctx, "void"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(ttl):
		t.Fatal("Done not closed within the TTL after the limit was deleted")
	}
	took := time.Since(t0)
	err = l.Err()
	if !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("Err %v, want ErrLeaseLost", err)
	}
	var wire *messages.Error
	if !errors.As(err, &wire) || wire.Code != messages.CodeLeaseNotFound {
		t.Fatalf("Err %v is not the broker's lease_not_found answer", err)
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, client.ErrLeaseLost) {
		t.Fatalf("context cause %v, want ErrLeaseLost", cause)
	}
	t.Logf("holder learned of the voided lease after %v (TTL %v)", took.Round(time.Millisecond), ttl)
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release of a lost lease: %v", err)
	}
}

// TestLeaseLostDuringDo: the fn's context is cancelled when the lease is
// voided; strict Do reports ErrLeaseLost, non-strict Do returns fn's error.
func TestLeaseLostDuringDo(t *testing.T) {
	const ttl = 3 * time.Second
	for _, strict := range []bool{true, false} {
		name := map[bool]string{true: "strict", false: "lenient"}[strict]
		t.Run(name, func(t *testing.T) {
			ev := newEnv(t)
			c := ev.client(lsQuiet)
			ctx := ctxT(t, 60*time.Second)
			if _, err := c.CreateLimit(ctx, name, 1); err != nil {
				t.Fatal(err)
			}
			fnErr := errors.New("work interrupted")
			running := make(chan struct{})
			cause := make(chan error, 1)
			done := make(chan error, 1)
			opts := []client.AcquireOption{client.WithLeaseTTL(ttl)}
			if strict {
				opts = append(opts, client.WithStrict())
			}
			go func() {
				done <- c.Do(ctx, name, 1, func(fctx context.Context) error {
					close(running)
					select {
					case <-fctx.Done():
						cause <- context.Cause(fctx)
					case <-time.After(30 * time.Second):
						cause <- errors.New("fn's context was never cancelled")
					}
					return fnErr
				}, opts...)
			}()
			select {
			case <-running:
			case <-time.After(20 * time.Second):
				t.Fatal("fn never ran")
			}
			if _, err := c.DeleteLimit(ctx, name); err != nil {
				t.Fatal(err)
			}
			if err := <-cause; !errors.Is(err, client.ErrLeaseLost) {
				t.Fatalf("fn's context cause %v, want ErrLeaseLost", err)
			}
			err := <-done
			if !errors.Is(err, fnErr) {
				t.Fatalf("Do returned %v, want fn's error in it", err)
			}
			if strict != errors.Is(err, client.ErrLeaseLost) {
				t.Fatalf("strict=%v: Do returned %v", strict, err)
			}
		})
	}
}

// TestLeaseHolderDies: a holder that goes away without releasing gives its
// slot back when its lease expires, and the queued waiter gets it at once.
func TestLeaseHolderDies(t *testing.T) {
	const ttl = 2 * time.Second
	cases := []struct {
		name string
		kill func(c *client.Client, nc *nats.Conn)
	}{
		{"connection-closed", func(_ *client.Client, nc *nats.Conn) { nc.Close() }},
		{"client-closed", func(c *client.Client, _ *nats.Conn) { _ = c.Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := newEnv(t)
			admin := ev.client()
			ctx := ctxT(t, 60*time.Second)
			if _, err := admin.CreateLimit(ctx, "dies", 1); err != nil {
				t.Fatal(err)
			}
			events := make(chan *nats.Msg, 64)
			enc := ev.conn()
			if _, err := enc.ChanSubscribe(lsSubj.Events("dies"), events); err != nil {
				t.Fatal(err)
			}
			if err := enc.Flush(); err != nil {
				t.Fatal(err)
			}

			hc, hnc := lsClient(t, ev, lsQuiet)
			h, err := hc.Acquire(ctx, "dies", 1, client.WithLeaseTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			type res struct {
				l   *client.Lease
				err error
				at  time.Time
			}
			got := make(chan res, 1)
			queued := make(chan int, 1)
			wc := ev.client()
			go func() {
				l, err := wc.Acquire(ctx, "dies", 1, client.WithQueued(func(q client.Queued) { queued <- q.Position }))
				got <- res{l, err, time.Now()}
			}()
			select {
			case <-queued:
			case r := <-got:
				t.Fatalf("waiter not queued: %v", r.err)
			}

			t0 := time.Now()
			tc.kill(hc, hnc)

			var expiredAt time.Time
			for expiredAt.IsZero() {
				select {
				case m := <-events:
					var ev messages.Event
					if err := json.Unmarshal(m.Data, &ev); err != nil {
						t.Fatal(err)
					}
					switch {
					case ev.LeaseID == h.ID() && ev.Kind == messages.EventExpired:
						expiredAt = time.Now()
					case ev.LeaseID == h.ID() && ev.Kind == messages.EventReleased:
						t.Fatalf("the dead holder's lease was released, not expired")
					}
				case <-time.After(ttl + 10*time.Second):
					t.Fatal("the dead holder's lease never expired")
				}
			}
			var r res
			select {
			case r = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("waiter not granted after the expiry")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			returned := r.at.Sub(t0)
			t.Logf("slot returned %v after the holder died (TTL %v); waiter granted %v after the expiry event",
				returned.Round(time.Millisecond), ttl, r.at.Sub(expiredAt).Round(time.Millisecond))
			if returned > ttl+3*time.Second {
				t.Fatalf("slot returned only %v after the holder died (TTL %v)", returned, ttl)
			}
			if r.l.Token() <= h.Token() {
				t.Fatalf("waiter token %d not above the dead holder's %d", r.l.Token(), h.Token())
			}
			info, err := admin.GetLimit(ctx, "dies")
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Holders) != 1 || info.Holders[0].LeaseID != r.l.ID() {
				t.Fatalf("holders %+v, want only the waiter's lease %s", info.Holders, r.l.ID())
			}
			if err := r.l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLeaseReleaseIdempotent: releasing twice, a voided lease, or an expired
// lease is harmless; on the wire an unknown lease is released=false with a reason.
func TestLeaseReleaseIdempotent(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	raw := ev.conn()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "rel", 1); err != nil {
		t.Fatal(err)
	}

	t.Run("twice", func(t *testing.T) {
		l, err := c.Acquire(ctx, "rel", 1)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := l.Release(ctx); err != nil {
				t.Fatalf("release %d: %v", i+1, err)
			}
		}
		if l.Err() != nil {
			t.Fatalf("Err after release: %v", l.Err())
		}
		select {
		case <-l.Done():
		default:
			t.Fatal("Done not closed after Release")
		}
		info, err := c.GetLimit(ctx, "rel")
		if err != nil || len(info.Holders) != 0 || info.ActiveSlots != 0 {
			t.Fatalf("after double release: %+v, %v", info, err)
		}
		// The slot is usable again, once.
		l2, err := c.TryAcquire(ctx, "rel", 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.TryAcquire(ctx, "rel", 1); !errors.Is(err, client.ErrNoSlots) {
			t.Fatalf("second try: %v, want ErrNoSlots (double release freed two slots?)", err)
		}
		if err := l2.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("wire", func(t *testing.T) {
		var acq messages.AcquireReply
		lsRaw(t, raw, lsSubj.Verb(messages.VerbAcquire, "rel"), messages.AcquireRequest{Occupy: 1, Try: true, TTLMillis: 1000}, &acq)
		if acq.Error != nil || acq.Lease == nil {
			t.Fatalf("raw acquire: %+v", acq)
		}
		var rel messages.ReleaseReply
		lsRaw(t, raw, lsSubj.Verb(messages.VerbRelease, "rel"), messages.ReleaseRequest{LeaseID: acq.Lease.ID}, &rel)
		if !rel.Released || rel.Error != nil {
			t.Fatalf("first release: %+v", rel)
		}
		rel = messages.ReleaseReply{}
		lsRaw(t, raw, lsSubj.Verb(messages.VerbRelease, "rel"), messages.ReleaseRequest{LeaseID: acq.Lease.ID}, &rel)
		if rel.Released || rel.Reason == "" || rel.Error != nil {
			t.Fatalf("second release: %+v, want released=false with a reason", rel)
		}

		// A lease nobody renews expires at the broker; releasing it then is harmless.
		acq = messages.AcquireReply{}
		lsRaw(t, raw, lsSubj.Verb(messages.VerbAcquire, "rel"), messages.AcquireRequest{Occupy: 1, Try: true, TTLMillis: 1000}, &acq)
		if acq.Error != nil || acq.Lease == nil {
			t.Fatalf("raw acquire: %+v", acq)
		}
		eventually(t, 10*time.Second, "unrenewed lease expired", func() bool {
			_, held := lsHolder(t, c, "rel", acq.Lease.ID)
			return !held
		})
		rel = messages.ReleaseReply{}
		lsRaw(t, raw, lsSubj.Verb(messages.VerbRelease, "rel"), messages.ReleaseRequest{LeaseID: acq.Lease.ID}, &rel)
		if rel.Released || rel.Reason == "" || rel.Error != nil {
			t.Fatalf("release of an expired lease: %+v, want released=false with a reason", rel)
		}
	})

	t.Run("voided", func(t *testing.T) {
		if _, err := c.CreateLimit(ctx, "rel2", 1); err != nil {
			t.Fatal(err)
		}
		// Long TTL: the client does not renew (and notice) before Release.
		l, err := c.Acquire(ctx, "rel2", 1, client.WithLeaseTTL(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteLimit(ctx, "rel2"); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release of a voided lease: %v", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("second release of a voided lease: %v", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		// The broker stops, the client cannot renew, the lease runs out.
		l, err := c.Acquire(ctx, "rel", 1, client.WithLeaseTTL(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		rsStopBroker(t, ev)
		select {
		case <-l.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("lease did not end with no broker to renew it")
		}
		if !errors.Is(l.Err(), client.ErrLeaseLost) {
			t.Fatalf("Err %v, want ErrLeaseLost", l.Err())
		}
		rsStartBroker(t, ev)
		// The new broker gives the holder its TTL again (a failover never
		// expires a live holder); nobody renews it, so it expires then.
		eventually(t, 10*time.Second, "the re-armed lease expired", func() bool {
			info, err := c.GetLimit(ctx, "rel")
			return err == nil && len(info.Holders) == 0
		})
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release of an expired lease: %v", err)
		}
		var rel messages.ReleaseReply
		lsRaw(t, raw, lsSubj.Verb(messages.VerbRelease, "rel"), messages.ReleaseRequest{LeaseID: l.ID()}, &rel)
		if rel.Released || rel.Reason == "" || rel.Error != nil {
			t.Fatalf("wire release of a lease expired across a restart: %+v", rel)
		}
		if info, err := c.GetLimit(ctx, "rel"); err != nil || len(info.Holders) != 0 {
			t.Fatalf("after restart: %+v, %v", info, err)
		}
	})
}

// TestLeaseFencingTokens: tokens strictly increase over acquisitions,
// immediate and queued, and across deletion and re-creation of the limit.
func TestLeaseFencingTokens(t *testing.T) {
	ev := newEnv(t)
	c := ev.client(lsQuiet)
	c2 := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "tok", 2); err != nil {
		t.Fatal(err)
	}
	var last uint64
	check := func(l *client.Lease) *client.Lease {
		t.Helper()
		if l.Token() <= last {
			t.Fatalf("token %d not above the previous %d", l.Token(), last)
		}
		last = l.Token()
		h, ok := lsHolder(t, c, "tok", l.ID())
		if !ok || h.Token != l.Token() {
			t.Fatalf("broker holder %+v (found %v), client token %d", h, ok, l.Token())
		}
		return l
	}
	acquire := func() *client.Lease {
		t.Helper()
		l, err := c.Acquire(ctx, "tok", 1)
		if err != nil {
			t.Fatal(err)
		}
		return check(l)
	}
	prev := acquire()
	for range 4 {
		cur := acquire()
		if err := prev.Release(ctx); err != nil {
			t.Fatal(err)
		}
		prev = cur
	}
	// Full: the next acquisition is queued and granted by a release.
	other := acquire()
	got := make(chan *client.Lease, 1)
	queued := make(chan int, 1)
	go func() {
		l, err := c2.Acquire(ctx, "tok", 1, client.WithQueued(func(q client.Queued) { queued <- q.Position }))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-queued
	if err := prev.Release(ctx); err != nil {
		t.Fatal(err)
	}
	q := <-got
	if q == nil {
		t.FailNow()
	}
	check(q)
	_ = q.Release(ctx)
	_ = other.Release(ctx)

	held := acquire()
	if _, err := c.DeleteLimit(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "tok", 2); err != nil {
		t.Fatal(err)
	}
	acquire() // acquire checks the token itself
	if held.Token() >= last {
		t.Fatalf("token after re-creation %d not above %d", last, held.Token())
	}
}

// TestLeaseClientDeadlineNotAfterBroker: the holder never believes its lease
// lasts longer than the broker keeps it, so a holder cut off from the broker
// stops before its slot can go to someone else. Checked for an immediate
// grant, a queued grant and a renewal.
func TestLeaseClientDeadlineNotAfterBroker(t *testing.T) {
	const ttl = 3 * time.Second
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "dl", 1); err != nil {
		t.Fatal(err)
	}
	check := func(what string, l *client.Lease) {
		t.Helper()
		h, ok := lsHolder(t, c, "dl", l.ID())
		if !ok {
			t.Fatalf("%s: not a holder", what)
		}
		if l.ExpiresAt().After(h.ExpiresAt) {
			t.Fatalf("%s: the client's deadline %v is after the broker's %v (by %v)", what,
				l.ExpiresAt(), h.ExpiresAt, l.ExpiresAt().Sub(h.ExpiresAt))
		}
	}
	l1, err := c.Acquire(ctx, "dl", 1, client.WithLeaseTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	check("immediate grant", l1)

	got := make(chan *client.Lease, 1)
	queued := make(chan int, 1)
	go func() {
		l, err := ev.client().Acquire(ctx, "dl", 1, client.WithLeaseTTL(ttl), client.WithQueued(func(q client.Queued) { queued <- q.Position }))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-queued
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-got
	if l2 == nil {
		t.FailNow()
	}
	// The broker starts a pushed grant's clock when it has the acceptance,
	// which may reach it after the grant reached Acquire's caller.
	eventually(t, 10*time.Second, "the broker's deadline of the queued grant at or after the client's", func() bool {
		h, ok := lsHolder(t, c, "dl", l2.ID())
		return ok && !l2.ExpiresAt().After(h.ExpiresAt)
	})

	e := l2.ExpiresAt()
	eventually(t, 2*ttl, "renewal", func() bool { return l2.ExpiresAt().After(e) })
	check("renewal", l2)
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
