package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestConfinedUserActsOnlyOnItsLimit runs the user app-db, whose NATS
// permissions allow the use verbs of limit db only, against a broker with
// limits db and other. NATS permissions see only the subject, so the
// confinement holds only if the broker refuses whatever in a request's body
// reaches past its subject's limit (names, lease ids, wait ids), if the
// client tells a denied publish from a broker that does not answer, and if
// a grant pushed by someone else than the broker is not taken for one.
func TestConfinedUserActsOnlyOnItsLimit(t *testing.T) {
	x := newAuthEnv(t, 0)
	ctx := ctxT(t, 5*time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := x.ops.CreateLimit(ctx, "other", 3); err != nil {
		t.Fatal(err)
	}

	t.Run("DeniedPublishIsPermissionDeniedNotTimeout", func(t *testing.T) { confinedDeniedPublish(t, x) })
	t.Run("NamesInBodyCannotReachAnotherLimit", func(t *testing.T) { confinedNamesInBody(t, x) })
	t.Run("LeaseAndWaitOfAnotherLimitAreForbidden", func(t *testing.T) { confinedForeignIDs(t, x) })
	t.Run("SubscriptionsOutsideItsInboxAndEventsAreDenied", func(t *testing.T) { confinedSubscriptions(t, x) })
	t.Run("ForgedGrantWithoutKeyIsIgnored", func(t *testing.T) { confinedForgedGrant(t, x) })
	t.Run("SlotctlExitsNoPermission", func(t *testing.T) { confinedSlotctl(t, x) })

	t.Run("StateUntouchedAcrossRestart", func(t *testing.T) {
		for _, when := range []string{"before the restart", "after the restart"} {
			if when == "after the restart" {
				x.restart(t)
			}
			x.mustServe(t, when)
			x.sameConfig(t, "db", messages.Limit{Limit: 2, Active: true})
			x.sameConfig(t, "other", messages.Limit{Limit: 3, Active: true})
			x.noHolders(t, "other")
			// The confined user still works through the restarted broker.
			app := x.client(t, userAppDB)
			l, err := app.Acquire(ctxT(t, time.Minute), "db", 1)
			if err != nil {
				t.Fatalf("%s: app-db acquire db: %v", when, err)
			}
			if err := l.Release(ctxT(t, time.Minute)); err != nil {
				t.Fatalf("%s: app-db release db: %v", when, err)
			}
		}
	})
}

// wantDenied checks that err is ErrPermissionDenied naming subject, and
// not a timeout: the server refused the publish, so waiting is pointless.
func wantDenied(t *testing.T, what string, err error, subject string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want ErrPermissionDenied", what)
	case errors.Is(err, client.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
		t.Errorf("%s: %v: a timeout, want ErrPermissionDenied at once (the server refused the publish to %s)", what, err, subject)
	case !errors.Is(err, client.ErrPermissionDenied):
		t.Errorf("%s: %v, want ErrPermissionDenied", what, err)
	case !strings.Contains(err.Error(), subject):
		t.Errorf("%s: %q does not name the subject %s", what, err, subject)
	}
}

// confinedDeniedPublish: the Go client turns the server's permissions
// violation into ErrPermissionDenied for acquisitions of another limit,
// multi-limit acquisitions (their own subject) and the admin verbs, well
// before its WithTimeout(30s) would end the wait.
func confinedDeniedPublish(t *testing.T, x *authEnv) {
	app := x.client(t, userAppDB)
	calls := []struct {
		what, subject string
		call          func(ctx context.Context) error
	}{
		{"acquire other", "slotbroker.v1.acquire.other", func(ctx context.Context) error {
			_, err := app.Acquire(ctx, "other", 1, client.WithTimeout(30*time.Second))
			return err
		}},
		{"try-acquire other", "slotbroker.v1.acquire.other", func(ctx context.Context) error {
			_, err := app.TryAcquire(ctx, "other", 1, client.WithTimeout(30*time.Second))
			return err
		}},
		{"acquire db with names other", "slotbroker.v1.acquire-many.db.other", func(ctx context.Context) error {
			_, err := app.Acquire(ctx, "db", 1, client.WithNames("other"), client.WithTimeout(30*time.Second))
			return err
		}},
		{"create db", "slotbroker.v1.create.db", func(ctx context.Context) error {
			_, err := app.CreateLimit(ctx, "db", 5)
			return err
		}},
		{"update db", "slotbroker.v1.update.db", func(ctx context.Context) error {
			_, err := app.UpdateLimit(ctx, "db", client.LimitUpdate{Limit: client.Ptr(5)})
			return err
		}},
		{"delete db", "slotbroker.v1.delete.db", func(ctx context.Context) error {
			_, err := app.DeleteLimit(ctx, "db")
			return err
		}},
		{"list", "slotbroker.v1.list", func(ctx context.Context) error {
			_, err := app.ListLimits(ctx)
			return err
		}},
		{"get other", "slotbroker.v1.get.other", func(ctx context.Context) error {
			_, err := app.GetLimit(ctx, "other")
			return err
		}},
	}
	// Concurrently, so that a client that waits for its timeouts fails in
	// one timeout, not eight.
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			wantDenied(t, c.what, c.call(ctx), c.subject)
		}()
	}
	wg.Wait()
	x.noHolders(t, "other")
	x.noHolders(t, "db")
	x.sameConfig(t, "db", messages.Limit{Limit: 2, Active: true})

	// The same client still works on db afterwards.
	l, err := app.Acquire(ctxT(t, time.Minute), "db", 1)
	if err != nil {
		t.Fatalf("acquire db after the denials: %v", err)
	}
	if err := l.Release(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// confinedNamesInBody: acquire.db whose body names other is refused
// (bad_request or forbidden), queued or try, and other holds nothing.
func confinedNamesInBody(t *testing.T, x *authEnv) {
	nc := x.connect(t, userAppDB)
	try := tryAcquire()
	try.Names = []string{"other"}
	queued := queuedAcquire(nc.NewInbox() + "." + nuid.Next())
	queued.Names = []string{"other"}
	both := tryAcquire()
	both.Names = []string{"db", "other"}
	for _, c := range []struct {
		what string
		req  messages.AcquireRequest
	}{{"try, names [other]", try}, {"queued, names [other]", queued}, {"try, names [db other]", both}} {
		for _, enc := range []messages.Encoding{messages.JSON, messages.Msgpack} {
			r := c.req
			r.WaitID = nuid.Next()
			reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), enc, r)
			wantCode(t, "acquire.db "+c.what+" ("+enc.String()+")", reply.Error, messages.CodeBadRequest, messages.CodeForbidden)
			if reply.Lease != nil {
				t.Errorf("acquire.db %s: granted lease %+v", c.what, reply.Lease)
			}
			x.notStored(t, r.WaitID)
		}
	}
	x.noHolders(t, "other")
	x.noHolders(t, "db")
}

// confinedForeignIDs: a lease and a wait on other, learnt by id, cannot be
// released, renewed or cancelled through db's subjects: forbidden, and
// the lease and the wait go on.
func confinedForeignIDs(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 2*time.Minute)
	held, err := x.ops.Acquire(ctx, "other", 3, client.WithLeaseTTL(10*time.Minute), client.WithHolder("ops holds other"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Release(ctxT(t, time.Minute)) }()

	waiter := x.client(t, userOps)
	wctx, wcancel := context.WithCancel(ctx)
	waitDone := make(chan error, 1)
	go func() {
		l, err := waiter.Acquire(wctx, "other", 1)
		if l != nil {
			_ = l.Release(context.Background())
		}
		waitDone <- err
	}()
	defer func() { wcancel(); <-waitDone }()
	var waitID string
	eventually(t, 30*time.Second, "a waiter queued on other", func() bool {
		info := x.limit(t, "other")
		if len(info.Waiters) == 1 {
			waitID = info.Waiters[0].WaitID
		}
		return waitID != ""
	})

	nc := x.connect(t, userAppDB)
	rel := rawRequest[messages.ReleaseReply](t, nc, verbSubject("release", "db"), messages.JSON, messages.ReleaseRequest{LeaseID: held.ID()})
	wantCode(t, "release.db of other's lease", rel.Error, messages.CodeForbidden)
	if rel.Released {
		t.Errorf("release.db released other's lease %s", held.ID())
	}
	ren := rawRequest[messages.RenewReply](t, nc, verbSubject("renew", "db"), messages.JSON, messages.RenewRequest{LeaseID: held.ID(), TTLMillis: 1000})
	wantCode(t, "renew.db of other's lease to 1s", ren.Error, messages.CodeForbidden)
	can := rawRequest[messages.CancelReply](t, nc, verbSubject("cancel", "db"), messages.Msgpack, messages.CancelRequest{WaitID: waitID})
	wantCode(t, "cancel.db of other's wait", can.Error, messages.CodeForbidden)
	if can.Cancelled {
		t.Errorf("cancel.db cancelled other's wait %s", waitID)
	}

	info := x.limit(t, "other")
	found := false
	for _, h := range info.Holders {
		if h.LeaseID == held.ID() {
			found = true
			if !h.ExpiresAt.After(time.Now().Add(time.Minute)) {
				t.Errorf("other's lease expires at %v: the renew through renew.db shortened it", h.ExpiresAt)
			}
		}
	}
	if !found {
		t.Errorf("other's lease %s is gone: holders %+v", held.ID(), info.Holders)
	}
	if len(info.Waiters) != 1 || info.Waiters[0].WaitID != waitID {
		t.Errorf("other's waiter %s is gone: waiters %+v", waitID, info.Waiters)
	}
	select {
	case <-held.Done():
		t.Errorf("the holder's lease ended: %v", held.Err())
	default:
	}
	select {
	case err := <-waitDone:
		waitDone <- err
		t.Errorf("the waiter's Acquire ended: %v", err)
	default:
	}
}

// confinedSubscriptions: app-db may not subscribe to every inbox or to
// other's events (the server refuses), while db's events reach it.
func confinedSubscriptions(t *testing.T, x *authEnv) {
	nc := x.connect(t, userAppDB, nats.PermissionErrOnSubscribe(true), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	for _, subject := range []string{"_INBOX.>", "_INBOX.ops.>", "_INBOX.slotbroker.>", "slotbroker.v1.events.other.*", "slotbroker.v1.>"} {
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			continue // refused at once: fine
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(10 * time.Second); !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("subscription of app-db to %s: %v, want a permissions violation", subject, err)
		}
		_ = sub.Unsubscribe()
	}

	events, err := nc.SubscribeSync("slotbroker.v1.events.db.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	l, err := x.ops.Acquire(ctxT(t, time.Minute), "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if m, err := events.NextMsg(30 * time.Second); err != nil {
		t.Errorf("app-db's subscription to db's events: %v", err)
	} else if !strings.HasPrefix(m.Subject, "slotbroker.v1.events.db.") {
		t.Errorf("event on %s", m.Subject)
	}
}

// confinedForgedGrant: root, who may publish to app-db's inbox (but is not
// the broker), pushes a Grant for app-db's real wait id without the key,
// and with a wrong one. The waiting Acquire ignores both and returns the
// real lease later; root gets no GrantAck.
func confinedForgedGrant(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 2*time.Minute)
	full, err := x.ops.Acquire(ctx, "db", 2)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			_ = full.Release(ctxT(t, time.Minute))
		}
	}()

	// Root learns the notify subject and the wait id from the request
	// (it may subscribe anywhere), but forges without the key.
	sniff, err := x.rootNC.SubscribeSync(verbSubject("acquire", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := x.rootNC.Flush(); err != nil {
		t.Fatal(err)
	}
	victimNC := x.connect(t, userAppDB)
	victim := authClient(t, victimNC)
	type result struct {
		l   *client.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := victim.Acquire(ctx, "db", 1)
		res <- result{l, err}
	}()
	m, err := sniff.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("root saw no acquire request: %v", err)
	}
	_ = sniff.Unsubscribe()
	var seen messages.AcquireRequest
	if _, err := messages.Decode(m.Data, &seen); err != nil || seen.Notify == "" || seen.WaitID == "" {
		t.Fatalf("sniffed request %+v (%v): want a queued request with notify and wait id", seen, err)
	}
	eventually(t, 30*time.Second, "app-db queued on db", func() bool { return x.limit(t, "db").WaitersTotal == 1 })

	acks, err := x.rootNC.SubscribeSync(x.rootNC.NewInbox())
	if err != nil {
		t.Fatal(err)
	}
	forged := &messages.LeaseGrant{ID: "forged" + nuid.Next(), Token: 1 << 60, Names: []string{"db"}, Occupy: 1,
		TTLMillis: 60_000, ExpiresAt: time.Now().Add(time.Minute)}
	for _, key := range []string{"", "notthekey" + nuid.Next()} {
		for _, enc := range []messages.Encoding{messages.Msgpack, messages.JSON} {
			data, err := messages.Marshal(enc, messages.Grant{WaitID: seen.WaitID, Key: key, Lease: forged})
			if err != nil {
				t.Fatal(err)
			}
			if err := x.rootNC.PublishRequest(seen.Notify, acks.Subject, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The forged grants reach the victim's grant subscription before the
	// broker's, which the release below causes.
	if err := x.rootNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := full.Release(ctx); err != nil {
		t.Fatal(err)
	}
	released = true

	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		t.Fatal("the victim's Acquire did not return after the release")
	}
	if r.err != nil {
		t.Fatalf("the victim's Acquire: %v", r.err)
	}
	defer func() { _ = r.l.Release(ctxT(t, time.Minute)) }()
	if r.l.ID() == forged.ID {
		t.Fatalf("the victim's Acquire returned the forged lease %s", forged.ID)
	}
	holders := x.limit(t, "db").Holders
	if len(holders) != 1 || holders[0].LeaseID != r.l.ID() {
		t.Errorf("db's holders %+v, want the victim's real lease %s", holders, r.l.ID())
	}
	// Any GrantAck the victim sent was sent before it took the real grant:
	// after both flushes it is in root's subscription.
	if err := victimNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := x.rootNC.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := acks.Pending(); n != 0 {
		m, _ := acks.NextMsg(time.Second)
		t.Errorf("the forger got %d GrantAcks, e.g. %q; want none", n, m.Data)
	}
}

// confinedSlotctl: slotctl as app-db (with its inbox prefix) exits 77
// (EX_NOPERM) for another limit and for the verbs it may not use, and
// works on db.
func confinedSlotctl(t *testing.T, x *authEnv) {
	for _, c := range []struct {
		args    []string
		subject string
	}{
		{[]string{"run", "other", "--", "true"}, "slotbroker.v1.acquire.other"},
		{[]string{"run", "db,other", "--", "true"}, "slotbroker.v1.acquire-many.db.other"},
		{[]string{"inspect", "other"}, "slotbroker.v1.get.other"},
		{[]string{"ls"}, "slotbroker.v1.list"},
		{[]string{"create", "evil", "--limit", "1"}, "slotbroker.v1.create.evil"},
	} {
		r := x.slotctl(t, userAppDB, c.args...)
		if r.code != 77 || !strings.Contains(r.stderr, c.subject) {
			t.Errorf("slotctl %s as app-db: exit %d, stderr %q; want 77 and a message naming %s",
				strings.Join(c.args, " "), r.code, r.stderr, c.subject)
		}
	}
	if r := x.slotctl(t, userAppDB, "run", "db", "--", "true"); r.code != 0 {
		t.Errorf("slotctl run db as app-db: exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	x.noLimit(t, "evil")
	x.noHolders(t, "other")
}
