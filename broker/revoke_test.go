package broker

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// holdLeases takes one immediate lease per occupy on name, in order (so
// with increasing tokens), each acquired as the Go client does: a try with
// a notify subject and key for the notice of its revocation.
func holdLeases(t *testing.T, st *state, now time.Time, name string, occupy ...int) []*lease {
	t.Helper()
	var out []*lease
	for i, n := range occupy {
		id := string(rune('a' + i))
		req := messages.AcquireRequest{Occupy: n, Try: true, WaitID: "w" + id, Notify: "_INBOX.c.w" + id, Key: "key-of-lease-" + id + "-0123456789"}
		res := st.acquire(now, name, &req, messages.JSON, &effects{})
		if res.lease == nil {
			t.Fatalf("lease %d (occupy %d) not granted: %+v", i, n, res.reply)
		}
		out = append(out, res.lease)
	}
	return out
}

func ids(ls ...*lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.id
	}
	return out
}

// revokedEvents are fx's revoked events on limit, in order.
func revokedEvents(fx *effects, limit string) []messages.Event {
	var out []messages.Event
	for _, e := range fx.events {
		if e.Kind == messages.EventRevoked && e.Limit == limit {
			out = append(out, e)
		}
	}
	return out
}

// TestUpdateRevokeRevokesNewestLeasesFirst: an update with revoke that
// lowers a limit below its held slots revokes the leases with the highest
// tokens first, and only as many as it takes for the slots held to fit the
// new limit: the oldest holders, who have waited longest, keep theirs.
func TestUpdateRevokeRevokesNewestLeasesFirst(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 5)
	held := holdLeases(t, st, *now, "db", 1, 2, 1, 1) // tokens 1..4, 5 slots

	fx := &effects{}
	r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(2), Revoke: true, By: "ops on call"}, fx)
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	// Newest first: 4 (1 slot, 4 held), 3 (1 slot, 3 held), 2 (2 slots, 1 held): stop.
	want := ids(held[3], held[2], held[1])
	if !slices.Equal(r.Revoked, want) {
		t.Fatalf("revoked %v; want %v (newest first, until the held slots fit)", r.Revoked, want)
	}
	if got := st.limits["db"].held; got != 1 {
		t.Errorf("held after the update: %d; want 1", got)
	}
	if st.leases[held[0].id] == nil {
		t.Errorf("the oldest lease was revoked too")
	}
	if r.Limit == nil || r.Limit.ActiveSlots != 1 || r.Limit.HoldersTotal != 1 {
		t.Errorf("reply's limit %+v; want the state after the revocations (1 slot, 1 holder)", r.Limit)
	}
	evs := revokedEvents(fx, "db")
	if len(evs) != len(want) {
		t.Fatalf("%d revoked events; want %d: %+v", len(evs), len(want), evs)
	}
	for i, e := range evs {
		if e.LeaseID != want[i] || e.Reason != "limit lowered to 2" || e.By != "ops on call" {
			t.Errorf("revoked event %d: %+v; want lease %s, reason %q, by %q", i, e, want[i], "limit lowered to 2", "ops on call")
		}
	}
	// Each revoked lease is remembered: its renewal is answered revoked.
	for _, id := range want {
		if rr := st.renew(*now, id, 0, &effects{}); rr.Error == nil || rr.Error.Code != messages.CodeRevoked {
			t.Errorf("renewal of revoked lease %s: %+v; want code revoked", id, rr.Error)
		}
	}
}

// TestUpdateRevokePushesNoticesToTheHolders: every lease revoked by an
// update gets a RevokedNotice on its acquisition's notify subject, in its
// encoding, with its grant key, the reason and the revoker; a lease whose
// acquisition gave no notify subject gets none.
func TestUpdateRevokePushesNoticesToTheHolders(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 3)
	held := holdLeases(t, st, *now, "db", 1, 1)
	silent := acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, Try: true}).lease

	fx := &effects{}
	r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(1), Revoke: true, By: "ops"}, fx)
	if r.Error != nil || !slices.Equal(r.Revoked, []string{silent.id, held[1].id}) {
		t.Fatalf("update: %v, revoked %v; want %v", r.Error, r.Revoked, []string{silent.id, held[1].id})
	}
	if len(fx.notices) != 1 {
		t.Fatalf("%d notices; want 1 (the lease without notify gets none): %+v", len(fx.notices), fx.notices)
	}
	n := fx.notices[0]
	want := messages.RevokedNotice{Revoked: held[1].id, Key: held[1].key, Reason: "limit lowered to 1", By: "ops"}
	if n.notify != "_INBOX.c.wb" || n.enc != messages.JSON || n.msg != want {
		t.Errorf("notice %+v; want %+v to _INBOX.c.wb in JSON", n, want)
	}
}

// TestRevokePushesNoticeToQueuedAndImmediateHolders: revoke tells the
// holder of a lease granted at once and of one granted from the queue, on
// the notify subject each acquisition gave.
func TestRevokePushesNoticeToQueuedAndImmediateHolders(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	first := holdLeases(t, st, *now, "db", 1)[0]
	acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "q", Notify: "_INBOX.d.q", Key: "key-of-the-queued-one"})

	fx := &effects{}
	if r := st.revokeOn(*now, "db", &messages.RevokeRequest{LeaseID: first.id, Reason: "stuck", By: "me"}, fx); !r.Revoked {
		t.Fatalf("revoke: %+v", r)
	}
	if len(fx.notices) != 1 || fx.notices[0].notify != "_INBOX.c.wa" || fx.notices[0].msg.Key != first.key || fx.notices[0].msg.Reason != "stuck" {
		t.Fatalf("notices %+v; want one to _INBOX.c.wa with the key and reason", fx.notices)
	}
	if len(fx.grants) != 1 || fx.grants[0].lease == nil {
		t.Fatalf("grants %+v; want the queued acquisition granted", fx.grants)
	}
	queued := fx.grants[0].lease
	st.accept(*now, "q", &effects{})

	fx = &effects{}
	st.revokeOn(*now, "db", &messages.RevokeRequest{LeaseID: queued.id}, fx)
	if len(fx.notices) != 1 || fx.notices[0].notify != "_INBOX.d.q" || fx.notices[0].msg.Key != "key-of-the-queued-one" || fx.notices[0].enc != messages.Msgpack {
		t.Fatalf("notices %+v; want one to _INBOX.d.q with the queued acquisition's key, in msgpack", fx.notices)
	}
}

// TestUpdateRevokeGrantsWaitersOnlyWithinTheNewLimit: the slots revoked
// leases free go to waiters only as far as the new limit allows: at no
// point do the slots held exceed it.
func TestUpdateRevokeGrantsWaitersOnlyWithinTheNewLimit(t *testing.T) {
	t.Run("no room left", func(t *testing.T) {
		st, now := fakeState(t)
		mustCreate(t, st, *now, "db", 4)
		holdLeases(t, st, *now, "db", 2, 1, 1)
		acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "_INBOX.x.w"})
		fx := &effects{}
		r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(2), Revoke: true}, fx)
		if len(r.Revoked) != 2 || len(fx.grants) != 0 || st.limits["db"].held != 2 {
			t.Fatalf("revoked %v, grants %d, held %d; want 2 revoked, nothing granted, 2 held", r.Revoked, len(fx.grants), st.limits["db"].held)
		}
		if st.waiters["w"] == nil {
			t.Errorf("the waiter left the queue")
		}
	})
	t.Run("room left by a large lease", func(t *testing.T) {
		st, now := fakeState(t)
		mustCreate(t, st, *now, "db", 4)
		holdLeases(t, st, *now, "db", 1, 1, 2)
		acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "w1", Notify: "_INBOX.x.w1"})
		acquireOK(t, st, *now, "db", messages.AcquireRequest{Occupy: 1, WaitID: "w2", Notify: "_INBOX.x.w2"})
		fx := &effects{}
		r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(3), Revoke: true}, fx)
		// The newest lease held 2: its revocation leaves 2 held, room for one waiter.
		if len(r.Revoked) != 1 || len(fx.grants) != 1 || fx.grants[0].w.id != "w1" || st.limits["db"].held != 3 {
			t.Fatalf("revoked %v, grants %+v, held %d; want 1 revoked, w1 granted, 3 held", r.Revoked, fx.grants, st.limits["db"].held)
		}
	})
}

// TestUpdateWithoutRevokeKeepsLeases: lowering a limit without revoke
// revokes nothing (the limit is over-subscribed until leases end), and
// revoke on a limit whose held slots fit revokes nothing either.
func TestUpdateWithoutRevokeKeepsLeases(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 3)
	holdLeases(t, st, *now, "db", 1, 1, 1)
	fx := &effects{}
	if r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(1)}, fx); r.Error != nil || r.Revoked != nil || len(fx.notices) != 0 || st.limits["db"].held != 3 {
		t.Fatalf("update without revoke: %+v, %d notices, held %d; want nothing revoked", r, len(fx.notices), st.limits["db"].held)
	}
	fx = &effects{}
	if r := st.update(*now, "db", &messages.UpdateRequest{Limit: ptr(3), Revoke: true}, fx); r.Error != nil || r.Revoked != nil || len(revokedEvents(fx, "db")) != 0 {
		t.Fatalf("update with revoke to a limit that fits: %+v; want nothing revoked", r)
	}
}

// TestImmediateLeaseKeepsItsNotifyAcrossRestart: a lease granted at once
// stores its acquisition's notify subject, encoding and key, so that a
// broker restarted from the record can still tell its holder of a
// revocation.
func TestImmediateLeaseKeepsItsNotifyAcrossRestart(t *testing.T) {
	st, now := fakeState(t)
	mustCreate(t, st, *now, "db", 1)
	l := holdLeases(t, st, *now, "db", 1)[0]
	var r leaseRecord
	if err := json.Unmarshal(l.record(), &r); err != nil {
		t.Fatal(err)
	}
	back := r.lease()
	if back.notify != "_INBOX.c.wa" || back.key != l.key || back.enc != messages.JSON {
		t.Fatalf("restored lease: notify %q, key %q, enc %v; want %q, %q, json", back.notify, back.key, back.enc, "_INBOX.c.wa", l.key)
	}
}
