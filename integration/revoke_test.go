package integration

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRevokeEndsTheHolderLeaseAndGrantsTheWaiter: a lease revoked by
// another client frees its slot for the waiter at once, the revoked event
// carries the reason and the revoker, and the holder learns (from the
// broker's notice, or at the latest at its next renewal): its Done closes
// and Err matches ErrLeaseRevoked (and ErrLeaseLost, which slotctl run and
// existing code handle).
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
		l, err := waiterC.Acquire(ctx, "rv", 1, client.WithQueued(func(client.Queued) { close(queued) }))
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

	// The holder learns well before its lease would have expired
	// uncontested (by the notice; a renewal is due a third of the TTL on).
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

// revokeTTL is the TTL of the leases of the tests of the pushed notice: a
// renewal is due only after a third of it, so a lease that ends within
// noticeWithin of its revocation was told by the notice.
const (
	revokeTTL    = time.Minute
	noticeWithin = 5 * time.Second
)

// endsRevoked waits for l to end by revocation, told by the broker's
// notice: long before a renewal could have told it. Its error matches
// ErrLeaseRevoked and names every one of texts (reason, revoker).
func endsRevoked(t *testing.T, what string, l *client.Lease, texts ...string) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(noticeWithin):
		t.Fatalf("%s: Done did not close within %v of the revocation (its renewal is %v away): no notice", what, noticeWithin, revokeTTL/3)
	}
	err := l.Err()
	if !errors.Is(err, client.ErrLeaseRevoked) || !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("%s: Err %v; want ErrLeaseRevoked (and ErrLeaseLost)", what, err)
	}
	for _, s := range texts {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: Err %q does not say %q", what, err, s)
		}
	}
	if !errors.Is(context.Cause(l.Context()), client.ErrLeaseRevoked) {
		t.Errorf("%s: the lease context's cause %v; want ErrLeaseRevoked", what, context.Cause(l.Context()))
	}
}

// TestRevokedHolderIsToldAtOnce: the broker pushes the notice of a
// revocation to the holder, whose Lease ends at once with ErrLeaseRevoked
// naming the reason and the revoker, instead of working on unguarded until
// its next renewal (20 s away here).
func TestRevokedHolderIsToldAtOnce(t *testing.T) {
	ev := newEnv(t)
	holder, admin := ev.client(), ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "rv", 1); err != nil {
		t.Fatal(err)
	}
	l, err := holder.Acquire(ctx, "rv", 1, client.WithLeaseTTL(revokeTTL))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := admin.RevokeLease(ctx, "rv", l.ID(), "stuck migration", client.RevokedBy("ops on call")); !ok || err != nil {
		t.Fatalf("RevokeLease: %v, %v", ok, err)
	}
	endsRevoked(t, "revoked lease", l, "stuck migration", "ops on call", l.ID())
}

// TestRevokedQueuedAndTriedLeasesAreToldAtOnce: a lease granted from the
// queue and one taken by a try (which queues nothing, but gives the broker
// a notify subject for this notice) are told of their revocation too.
func TestRevokedQueuedAndTriedLeasesAreToldAtOnce(t *testing.T) {
	ev := newEnv(t)
	holder, admin := ev.client(), ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "rv", 1); err != nil {
		t.Fatal(err)
	}
	tried, err := holder.TryAcquire(ctx, "rv", 1, client.WithLeaseTTL(revokeTTL))
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	got := make(chan *client.Lease, 1)
	go func() {
		l, err := holder.Acquire(ctx, "rv", 1, client.WithLeaseTTL(revokeTTL), client.WithQueued(func(client.Queued) { close(queued) }))
		if err != nil {
			t.Errorf("queued Acquire: %v", err)
		}
		got <- l
	}()
	<-queued
	if ok, err := admin.RevokeLease(ctx, "rv", tried.ID(), "tried"); !ok || err != nil {
		t.Fatalf("RevokeLease of the tried lease: %v, %v", ok, err)
	}
	endsRevoked(t, "tried lease", tried, "tried")
	pushed := <-got
	if pushed == nil {
		t.FailNow()
	}
	if ok, err := admin.RevokeLease(ctx, "rv", pushed.ID(), "queued"); !ok || err != nil {
		t.Fatalf("RevokeLease of the queued lease: %v, %v", ok, err)
	}
	endsRevoked(t, "lease granted from the queue", pushed, "queued")
}

// TestUpdateRevokeEndsTheNewestLeases: UpdateLimit with RevokeExcess lowers
// the limit and revokes the newest leases over it, returns their ids, and
// their holders are told at once; the oldest lease is kept.
func TestUpdateRevokeEndsTheNewestLeases(t *testing.T) {
	ev := newEnv(t)
	holder, admin := ev.client(), ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "up", 3); err != nil {
		t.Fatal(err)
	}
	var held []*client.Lease
	for range 3 {
		l, err := holder.Acquire(ctx, "up", 1, client.WithLeaseTTL(revokeTTL))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	var revoked []string
	info, err := admin.UpdateLimit(ctx, "up", client.LimitUpdate{Limit: client.Ptr(1)}, client.RevokeExcess("capacity planner", &revoked))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{held[2].ID(), held[1].ID()}; !slices.Equal(revoked, want) {
		t.Fatalf("revoked %v; want the two newest, newest first: %v", revoked, want)
	}
	if info.Limit.Limit != 1 || info.ActiveSlots != 1 || len(info.Holders) != 1 || info.Holders[0].LeaseID != held[0].ID() {
		t.Errorf("limit after the update: %+v; want 1 slot held by the oldest lease", info)
	}
	endsRevoked(t, "newest lease", held[2], "limit lowered to 1", "capacity planner")
	endsRevoked(t, "second newest lease", held[1], "limit lowered to 1")
	select {
	case <-held[0].Done():
		t.Fatalf("the oldest lease ended: %v", held[0].Err())
	default:
	}
	if err := held[0].Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Without RevokeExcess a lowered limit revokes nothing.
	kept, err := holder.Acquire(ctx, "up", 1, client.WithLeaseTTL(revokeTTL))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = kept.Release(ctx) }()
	if _, err := admin.UpdateLimit(ctx, "up", client.LimitUpdate{Limit: client.Ptr(1)}); err != nil {
		t.Fatal(err)
	}
	revoked = nil
	if _, err := admin.UpdateLimit(ctx, "up", client.LimitUpdate{Limit: client.Ptr(1)}, client.RevokeExcess("", &revoked)); err != nil || len(revoked) != 0 {
		t.Fatalf("update with revoke to a limit the held slots fit: %v, revoked %v; want none", err, revoked)
	}
	if _, err := admin.UpdateLimit(ctx, "up", client.LimitUpdate{Limit: client.Ptr(1)}, client.RevokeExcess("a\x07b", nil)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("update with a control character in by: %v; want ErrInvalidArgument", err)
	}
}

// TestForgedRevokedNoticeDoesNotEndTheLease: somebody who learns a
// holder's notify subject (here from a copy of its acquire request) and
// publishes a RevokedNotice for its lease without the acquisition's key
// does not end the lease; the broker's own notice still does.
func TestForgedRevokedNoticeDoesNotEndTheLease(t *testing.T) {
	ev := newEnv(t)
	holder, admin := ev.client(), ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "fg", 1); err != nil {
		t.Fatal(err)
	}
	spy := ev.conn()
	requests, err := spy.SubscribeSync(messages.NewSubjects("").Verb(messages.VerbAcquire, "fg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	l, err := holder.TryAcquire(ctx, "fg", 1, client.WithLeaseTTL(revokeTTL))
	if err != nil {
		t.Fatal(err)
	}
	m, err := requests.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var req messages.AcquireRequest
	if _, err := messages.Decode(m.Data, &req); err != nil || req.Notify == "" || req.Key == "" {
		t.Fatalf("the try's request %+v (%v): want a notify subject and a key", req, err)
	}

	forger := ev.conn()
	for _, n := range []messages.RevokedNotice{
		{Revoked: l.ID(), Reason: "forged, no key"},
		{Revoked: l.ID(), Key: req.Key + "X", Reason: "forged, wrong key"},
		{Revoked: l.ID(), Key: strings.Repeat("A", len(req.Key)), Reason: "forged, guessed key"},
	} {
		for _, enc := range []messages.Encoding{messages.JSON, messages.Msgpack} {
			data, err := messages.Marshal(enc, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := forger.Publish(req.Notify, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The client handles its inbox's messages in order: once it has
	// answered (declined) a grant for no wait of its, sent after the
	// forged notices, it has handled them.
	probe, err := messages.Marshal(messages.JSON, messages.Grant{WaitID: "nosuchwait"})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := forger.RequestWithContext(ctx, req.Notify, probe)
	if err != nil {
		t.Fatalf("probe after the forged notices: %v", err)
	}
	var a messages.GrantAck
	if _, err := messages.Decode(ack.Data, &a); err != nil || a.Accept {
		t.Fatalf("probe answered %s (%v); want accept false", ack.Data, err)
	}
	select {
	case <-l.Done():
		t.Fatalf("a forged notice ended the lease: %v", l.Err())
	default:
	}
	if info, err := admin.GetLimit(ctx, "fg"); err != nil || info.HoldersTotal != 1 {
		t.Fatalf("limit after the forged notices: %+v, %v; want the lease still held", info, err)
	}

	if ok, err := admin.RevokeLease(ctx, "fg", l.ID(), "for real"); !ok || err != nil {
		t.Fatalf("RevokeLease: %v, %v", ok, err)
	}
	endsRevoked(t, "lease revoked by the broker", l, "for real")
}

// TestRevokeNoticeReachesATryWithNotifyAndKey: a try may carry a notify
// subject, for the notice of its lease's revocation, only with a key; the
// notice then comes to notify, in the try's encoding, with the key, the
// reason and the revoker, as a message that expects no answer.
func TestRevokeNoticeReachesATryWithNotifyAndKey(t *testing.T) {
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := admin.CreateLimit(ctx, "tk", 1); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	resp := nc.NewRespInbox() // the inbox of nc's requests' reply subjects
	notify := resp[:strings.LastIndexByte(resp, '.')] + ".try1"
	notices, err := nc.SubscribeSync(notify)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	subject := messages.NewSubjects("").Verb(messages.VerbAcquire, "tk")
	ask := func(body string) messages.AcquireReply {
		t.Helper()
		m, err := nc.RequestWithContext(ctx, subject, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var r messages.AcquireReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask(`{"occupy":1,"try":true,"wait_id":"try0","notify":"` + notify + `"}`); r.Error == nil || r.Error.Code != messages.CodeBadRequest {
		t.Fatalf("try with notify and no key: %+v; want bad_request", r)
	}
	const key = "the-key-of-try1-0123456789"
	r := ask(`{"occupy":1,"try":true,"ttl_ms":60000,"wait_id":"try1","key":"` + key + `","notify":"` + notify + `"}`)
	if r.Error != nil || r.Lease == nil {
		t.Fatalf("try with notify and key: %+v; want granted", r)
	}
	if ok, err := admin.RevokeLease(ctx, "tk", r.Lease.ID, "why", client.RevokedBy("who")); !ok || err != nil {
		t.Fatalf("RevokeLease: %v, %v", ok, err)
	}
	m, err := notices.NextMsg(noticeWithin)
	if err != nil {
		t.Fatalf("no notice on %s: %v", notify, err)
	}
	var n messages.RevokedNotice
	if err := json.Unmarshal(m.Data, &n); err != nil {
		t.Fatalf("notice %q is not JSON, the try's encoding: %v", m.Data, err)
	}
	if want := (messages.RevokedNotice{Revoked: r.Lease.ID, Key: key, Reason: "why", By: "who"}); n != want || m.Reply != "" {
		t.Errorf("notice %+v (reply %q); want %+v, expecting no answer", n, m.Reply, want)
	}
}

// TestSlotctlRevokeAndUpdateRevokeEndGoHoldersAtOnce: through the slotctl
// binary, revoke and update --revoke end a Go holder's lease at once (its
// Done closes with ErrLeaseRevoked naming the reason, long before its
// one-minute lease would renew), and update --revoke --json lists the
// leases it revoked, the newest.
func TestSlotctlRevokeAndUpdateRevokeEndGoHoldersAtOnce(t *testing.T) {
	x := newCLIEnv(t)
	ctx := ctxT(t, time.Minute)
	coreLimit(t, x.c, "rv-db", 3)
	var held []*client.Lease
	for range 3 {
		l, err := x.c.Acquire(ctx, "rv-db", 1, client.WithLeaseTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	x.slotctl(t, "revoke", "rv-db", held[0].ID(), "--reason", "stuck").ok(t)
	select {
	case <-held[0].Done():
	case <-ctx.Done():
		t.Fatal("the revoked lease did not end")
	}
	if err := held[0].Err(); !errors.Is(err, client.ErrLeaseRevoked) || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("revoked lease's error %v: want ErrLeaseRevoked with the reason", err)
	}
	out := x.slotctl(t, "update", "rv-db", "--limit", "1", "--revoke", "--by", "ops", "--json").ok(t).stdout
	var reply struct {
		Revoked []string `json:"revoked"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("update --json: %v\n%s", err, out)
	}
	// Two leases left on a limit lowered to 1: the newest (held[2]) goes.
	if len(reply.Revoked) != 1 || reply.Revoked[0] != held[2].ID() {
		t.Fatalf("update --revoke revoked %v, want [%s] (the newest)", reply.Revoked, held[2].ID())
	}
	select {
	case <-held[2].Done():
	case <-ctx.Done():
		t.Fatal("the lease revoked by update did not end")
	}
	if err := held[2].Err(); !errors.Is(err, client.ErrLeaseRevoked) || !strings.Contains(err.Error(), "limit lowered to 1") {
		t.Fatalf("lease revoked by update: %v", err)
	}
	if err := held[1].Err(); err != nil {
		t.Fatalf("the older lease was ended too: %v", err)
	}
}
