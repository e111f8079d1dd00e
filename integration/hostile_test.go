package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// TestHostileSubjectsAreRefused sends requests whose notify or reply
// subject points where the broker must never publish: a subject longer than
// the server's control line (the server would close the broker's
// connection), the broker's own verbs ("delete.other"), its storage
// ("$KV.slotbroker.limit.other") or its own inbox. The broker publishes
// with its own rights, so each of these would let any client delete or
// forge limits, or kill the broker. Each is refused or dropped, the broker
// keeps serving, and a restart finds the state untouched.
func TestHostileSubjectsAreRefused(t *testing.T) {
	x := newAuthEnv(t, 0)
	ctx := ctxT(t, 5*time.Minute)
	for name, slots := range map[string]int{"db": 1, "other": 3} {
		if _, err := x.ops.CreateLimit(ctx, name, slots); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	otherCfg := messages.Limit{Limit: 3, Active: true}
	otherRev := x.kvRevision(t, "limit.other")

	t.Run("NotifyOverMaxSubjectLenIsRefused", func(t *testing.T) { hostileLongNotify(t, x) })
	t.Run("NotifyIntoServiceStorageOrBrokerInboxIsRefused", func(t *testing.T) { hostileNotify(t, x) })
	t.Run("ReplyIntoServiceStorageOrBrokerInboxIsNotAnswered", func(t *testing.T) { hostileReply(t, x) })
	t.Run("DiscoveryReplyIntoServiceOrStorageIsNotAnswered", func(t *testing.T) { hostileDiscoveryReply(t, x) })
	t.Run("DiscoveryStillAnswers", func(t *testing.T) { hostileDiscoveryAnswers(t, x) })

	t.Run("StateUntouchedAcrossRestart", func(t *testing.T) {
		check := func(when string) {
			x.mustServe(t, when)
			x.sameConfig(t, "other", otherCfg)
			x.noLimit(t, "evil")
			x.noHolders(t, "db")
			x.noHolders(t, "other")
			if rev := x.kvRevision(t, "limit.evil"); rev != 0 {
				t.Errorf("%s: the bucket holds limit.evil (revision %d)", when, rev)
			}
		}
		check("before the restart")
		if rev := x.kvRevision(t, "limit.other"); rev != otherRev {
			t.Errorf("limit.other was rewritten: revision %d, was %d", rev, otherRev)
		}
		x.restart(t)
		check("after the restart")
		hostileDiscoveryAnswers(t, x)
	})
}

// hostileLongNotify: a queued acquire whose notify is "_INBOX." and 5,000
// characters is refused with bad_request before anything is stored.
func hostileLongNotify(t *testing.T, x *authEnv) {
	ctx := ctxT(t, time.Minute)
	holder, err := x.ops.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	nc := x.connect(t, userOps)
	long := strings.Repeat("a", 5000)
	var ids []string
	for i, notify := range []string{"_INBOX." + long, nc.NewInbox() + "." + long} {
		for _, enc := range []messages.Encoding{messages.JSON, messages.Msgpack} {
			req := queuedAcquire(notify)
			ids = append(ids, req.WaitID)
			reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), enc, req)
			wantCode(t, fmt.Sprintf("notify of %d bytes (%s, case %d)", len(notify), enc, i), reply.Error, messages.CodeBadRequest)
		}
	}
	x.notStored(t, ids...)
	if info := x.limit(t, "db"); info.WaitersTotal != 0 || len(info.Waiters) != 0 {
		t.Errorf("db has waiters %+v after the refusals", info.Waiters)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatalf("release the holder: %v", err)
	}
	x.mustServe(t, "after the long notify and the release")
}

// hostileNotify: notify subjects in the broker's verbs, its storage or its
// own inbox are refused with bad_request, whoever asks (ops, or root whose
// inbox is the default "_INBOX").
func hostileNotify(t *testing.T, x *authEnv) {
	ctx := ctxT(t, time.Minute)
	holder, err := x.ops.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	opsNC := x.connect(t, userOps)
	targets := []string{
		"slotbroker.v1.delete.other",
		"slotbroker.v1.create.evil",
		"$KV.slotbroker.limit.other",
		"$KV.slotbroker.limit.evil",
		"_INBOX.slotbroker.x.y", // the broker's own inbox
		"_INBOX.slotbroker.x",
		opsNC.NewInbox() + ".*", // a wildcard in the requester's own inbox
	}
	var ids []string
	for _, who := range []struct {
		name string
		nc   *nats.Conn
	}{{"ops", opsNC}, {"root", x.rootNC}} {
		for i, notify := range targets {
			enc := messages.Encoding(i % 2)
			req := queuedAcquire(notify)
			ids = append(ids, req.WaitID)
			reply := rawRequest[messages.AcquireReply](t, who.nc, verbSubject("acquire", "db"), enc, req)
			wantCode(t, who.name+": notify "+notify, reply.Error, messages.CodeBadRequest)
		}
	}
	x.notStored(t, ids...)
	if err := holder.Release(ctx); err != nil {
		t.Fatalf("release the holder: %v", err)
	}
	// Had a waiter been queued, the release would have granted it now.
	eventually(t, 30*time.Second, "db without waiters after the release", func() bool {
		return x.limit(t, "db").WaitersTotal == 0
	})
	x.sameConfig(t, "other", messages.Limit{Limit: 3, Active: true})
	x.noLimit(t, "evil")
	x.mustServe(t, "after the hostile notify subjects")
}

// hostileReply: requests whose reply subject is a verb, the storage or the
// broker's own inbox are dropped unanswered and unprocessed (app-db may
// publish acquire.db and get.db with any reply subject; list needs ops or
// root).
func hostileReply(t *testing.T, x *authEnv) {
	appNC := x.connect(t, userAppDB)
	try, err := messages.Marshal(messages.JSON, tryAcquire())
	if err != nil {
		t.Fatal(err)
	}
	replies := []string{"slotbroker.v1.delete.other", "slotbroker.v1.create.evil", "$KV.slotbroker.limit.other",
		"$KV.slotbroker.limit.evil", "_INBOX.slotbroker.x.y"}
	send := func(nc *nats.Conn, subject string, body []byte) {
		for _, reply := range replies {
			if err := nc.PublishRequest(subject, reply, body); err != nil {
				t.Fatalf("publish %s with reply %s: %v", subject, reply, err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send(appNC, verbSubject("acquire", "db"), try)
	send(appNC, verbSubject("get", "db"), []byte("{}"))
	send(x.rootNC, subjList, []byte("{}"))
	send(x.rootNC, verbSubject("get", "other"), []byte("{}"))

	// The same verbs with proper reply subjects are answered after them.
	get := rawRequest[messages.LimitReply](t, appNC, verbSubject("get", "db"), messages.JSON, struct{}{})
	if get.Error != nil {
		t.Fatalf("get db: %v", get.Error)
	}
	list := rawRequest[messages.ListReply](t, x.rootNC, subjList, messages.JSON, struct{}{})
	if list.Error != nil {
		t.Fatalf("list: %v", list.Error)
	}
	x.noHolders(t, "db") // the dropped try acquisitions took nothing
	x.sameConfig(t, "other", messages.Limit{Limit: 3, Active: true})
	x.noLimit(t, "evil")
	x.mustServe(t, "after the hostile reply subjects")
}

// hostileDiscoveryReply: "$SRV" requests (answered by the service
// framework) whose reply subject is the storage or a verb are dropped too.
// Root sends them: it may publish anywhere, so only the broker can refuse.
func hostileDiscoveryReply(t *testing.T, x *authEnv) {
	subjects := []string{"$SRV.PING", "$SRV.INFO", "$SRV.STATS", "$SRV.PING.slotbroker", "$SRV.INFO.slotbroker", "$SRV.STATS.slotbroker"}
	replies := []string{"$KV.slotbroker.limit.other", "slotbroker.v1.delete.other", "$KV.slotbroker.limit.evil",
		"slotbroker.v1.create.evil", "_INBOX.slotbroker.x.y"}
	for _, s := range subjects {
		for _, r := range replies {
			if err := x.rootNC.PublishRequest(s, r, nil); err != nil {
				t.Fatalf("publish %s with reply %s: %v", s, r, err)
			}
		}
	}
	// Each discovery subject answers a proper request after the hostile ones.
	for _, s := range subjects {
		if _, err := x.rootNC.Request(s, nil, 20*time.Second); err != nil {
			t.Fatalf("%s with a proper reply subject: %v", s, err)
		}
	}
	x.sameConfig(t, "other", messages.Limit{Limit: 3, Active: true})
	x.noLimit(t, "evil")
	x.mustServe(t, "after the hostile discovery requests")
}

// hostileDiscoveryAnswers: `nats micro ping`/`info` still find the
// service: "$SRV.PING" and "$SRV.INFO.slotbroker" from ops (its own inbox)
// answer with the name slotbroker.
func hostileDiscoveryAnswers(t *testing.T, x *authEnv) {
	nc := x.connect(t, userOps)
	for _, s := range []string{"$SRV.PING", "$SRV.INFO.slotbroker"} {
		m, err := nc.Request(s, nil, 20*time.Second)
		if err != nil {
			t.Fatalf("%s from ops: %v", s, err)
		}
		var id struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(m.Data, &id); err != nil || id.Name != messages.ServiceName {
			t.Errorf("%s answered %q (%v), want the name %q", s, m.Data, err, messages.ServiceName)
		}
	}
}
