package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestLeaseGrantedByDeactivationCanBeReleased: a Go client waits on db;
// an operator deactivates db, so the waiter is granted at once with a
// lease on no limit (names [], PROTOCOL §7.4). Its holder must still be able
// to release and renew that lease, through the subject of the limit it
// asked for (the only one its NATS permissions may allow) or through the
// subject the Go client uses for a lease without names. The broker keeps
// the lease's scope as its names for a single-limit acquisition, so a
// lease whose names emptied has no scope at all: every release and renew
// is refused as "forbidden", with a message that points to limit "_".
func TestLeaseGrantedByDeactivationCanBeReleased(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	ops := ev.e.Client
	if _, err := ops.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holder, err := ops.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Release(ctxT(t, time.Minute)) }()

	app := ev.client()
	type result struct {
		l   *client.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := app.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Minute))
		res <- result{l, err}
	}()
	eventually(t, 30*time.Second, "the app queued on db", func() bool {
		info, err := ops.GetLimit(ctx, "db")
		return err == nil && info.WaitersTotal == 1
	})
	if _, err := ops.UpdateLimit(ctx, "db", client.LimitUpdate{Active: client.Ptr(false)}); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		t.Fatal("the waiting Acquire did not return after db was deactivated")
	}
	if r.err != nil {
		t.Fatalf("Acquire after db was deactivated: %v", r.err)
	}
	if r.l.Unlimited() {
		t.Skip("the broker granted no lease: nothing to release")
	}

	// Raw, through the subject of the limit the acquisition named.
	nc := ev.conn()
	rel := rawRequest[messages.ReleaseReply](t, nc, verbSubject("release", "db"), messages.JSON, messages.ReleaseRequest{LeaseID: r.l.ID()})
	if rel.Error != nil {
		t.Errorf("release.db of the lease granted to db's waiter (names %v): %s: %s", r.l.Names(), rel.Error.Code, rel.Error.Message)
	}
	ren := rawRequest[messages.RenewReply](t, nc, verbSubject("renew", "db"), messages.JSON, messages.RenewRequest{LeaseID: r.l.ID()})
	if ren.Error != nil && ren.Error.Code != messages.CodeLeaseNotFound {
		t.Errorf("renew.db of the lease granted to db's waiter: %s: %s", ren.Error.Code, ren.Error.Message)
	}

	// Through the Go client, which sends it to "release._" for a lease without names.
	if err := r.l.Release(ctx); err != nil {
		t.Errorf("Lease.Release of the lease granted by the deactivation: %v (permission denied: %v)", err, errors.Is(err, client.ErrPermissionDenied))
	}
}
