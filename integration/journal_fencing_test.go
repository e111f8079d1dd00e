package integration

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestSecondBrokerOnABucketStandsBy: a second broker started on the same
// bucket (by accident, or as a standby) does not serve while the first
// leads: a limit of 1 admits one of six try-acquires, not two. When the first
// stops, the second takes over at once with the first's state.
func TestSecondBrokerOnABucketStandsBy(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	first := ev.e.Client
	if _, err := first.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	second, err := broker.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	started := make(chan error, 1)
	go func() { started <- second.Start(ctx) }()
	eventually(t, 10*time.Second, "the second broker standing by", func() bool { return second.Role() == messages.RoleStandby })
	granted := 0
	var held *client.Lease
	for range 6 {
		l, err := first.TryAcquire(ctx, "db", 1, client.WithLeaseTTL(time.Hour))
		if err == nil {
			granted++
			held = l
		} else if !errors.Is(err, client.ErrNoSlots) {
			t.Fatal(err)
		}
	}
	if granted != 1 {
		t.Fatalf("%d of 6 try-acquires on a limit of 1 were granted with a second broker on the bucket", granted)
	}
	select {
	case err := <-started:
		t.Fatalf("the second broker's Start returned (%v) while the first leads", err)
	default:
	}
	rsStopBroker(t, ev)
	if err := <-started; err != nil {
		t.Fatalf("the standby did not take over: %v", err)
	}
	info, err := first.GetLimit(ctx, "db")
	if err != nil || info.HoldersTotal != 1 || info.Holders[0].LeaseID != held.ID() || info.Holders[0].Token != held.Token() {
		t.Fatalf("db after the takeover: %+v, %v, want the lease %s held", info, err, held.ID())
	}
}

// TestForeignAppendDeposesTheLeader: every journal append is conditional on
// the journal's last sequence as its broker stored it. When another writer
// appends (a broker that took over while this one was paused), this
// broker's next append is refused, it stops serving and says why, and the
// change is not answered as stored.
func TestForeignAppendDeposesTheLeader(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	if _, err := ev.e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	part, _ := journalPartWriter(ctx, t, ev)
	part("Z", "1/1", "foreign")
	other := ev.client(client.WithRetryFor(0))
	if _, err := other.CreateLimit(ctx, "evil", 5); err == nil {
		t.Fatal("a create was answered as stored after another writer appended to the journal")
	}
	select {
	case <-ev.e.Broker.Done():
	case <-ctx.Done():
		t.Fatal("the broker did not stop after its append was refused")
	}
	if err := ev.e.Broker.Err(); !errors.Is(err, broker.ErrDeposed) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("the broker's reason: %v, want ErrDeposed saying the append was refused", err)
	}
	if recs := storedRecords(t, ev.conn()); recs["limit.evil"] != nil {
		t.Fatal("the refused create reached the journal")
	}
}

// TestStopReturnsDuringAJournalOutage: a change waits for its append, and
// an append is retried while the journal has no leader. Stop gives up on
// appends not stored within its grace, so that a SIGTERM during a JetStream
// outage ends the broker instead of hanging until the outage ends; the
// change waiting is answered unavailable, not granted.
func TestStopReturnsDuringAJournalOutage(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	if _, err := ev.e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	begin, end := envJournalOutage(t, ev)
	begin()
	defer end()
	reply := requestAsync(ev.conn(), ev.e.Broker.Subjects().Verb("acquire", "db"), []byte(`{"occupy":1,"try":true}`), 30*time.Second)
	eventually(t, 10*time.Second, "the acquisition applied in memory", func() bool {
		info, err := ev.e.Client.GetLimit(ctx, "db")
		return err == nil && info.HoldersTotal == 1
	})
	stopped := make(chan error, 1)
	go func() { stopped <- ev.e.Broker.Stop() }()
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not return during the journal outage")
	}
	r := <-reply
	if r.err == nil && strings.Contains(string(r.msg.Data), `"granted"`) {
		t.Fatalf("the acquisition whose append was never stored was answered granted: %s", r.msg.Data)
	}
}
