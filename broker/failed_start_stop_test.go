package broker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStopReturnsAfterStartFailedWritingItsFirstSnapshot: a Start that
// fails after rebuilding the state (here: its first snapshot cannot be
// written within Start's context, the broker's user may not write
// snapshot keys) has queued the rebuild's changes (a waiter whose limit is
// gone is purged) for a journal writer that never starts. Stop after the
// failed Start (the daemon and brokertest call it) must return, not wait
// for that append for ever.
func TestStopReturnsAfterStartFailedWritingItsFirstSnapshot(t *testing.T) {
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "p"},
			{Username: "broker", Password: "p", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$KV.slotbroker.snap.>"}}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	admin, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "p"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(admin)
	// A journal with an append and no snapshot yet: a waiter whose limit
	// does not exist (the rebuild fails it and purges its record).
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: journalStream("slotbroker"), Subjects: []string{journalSubject("slotbroker")},
		Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute, Discard: jetstream.DiscardOld,
	}); err != nil {
		t.Fatal(err)
	}
	w := waiterRecord{ID: "w1", Names: []string{"gone"}, Occupy: 1, TTLMillis: 1000, Since: time.Now().UTC(), Notify: "_INBOX.someone.w1", Order: 1}
	m := nats.NewMsg(journalSubject("slotbroker"))
	m.Data = mustJSON(journalEntry{Ops: []journalOp{{Key: waiterKey("w1"), Val: mustJSON(w)}}})
	m.Header.Set(hdrBatch, "seed")
	m.Header.Set(hdrPart, "1/1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("broker", "p"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := New(nc, WithLeaderLease(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer scancel()
	if err := b.Start(sctx); err == nil {
		_ = b.Stop()
		t.Skip("Start succeeded: this test needs a Start that fails writing its first snapshot")
	} else {
		t.Logf("Start failed: %v", err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop() }()
	select {
	case err := <-stopped:
		t.Logf("Stop returned: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("Stop after a Start that failed writing its first snapshot did not return within 15 s: the rebuild's change waits for a journal append that no writer sends")
	}
}
