package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// TestSecondWriterIsRefusedAndStops: every journal append is conditional on
// the journal's last sequence as its broker stored it. A second broker on
// the same bucket (started by accident, or a deposed one that woke up) is
// refused at its first append, stops serving and says why, and nothing it
// did reaches the state: the first broker's limits and leases are intact.
func TestSecondWriterIsRefusedAndStops(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	first := ev.e.Client
	if _, err := first.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	second, err := broker.New(ev.conn(), broker.WithPrefix("second"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := second.Start(sctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	// The first broker appends after the second read the journal.
	held, err := first.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// The second broker's first append is refused.
	other := ev.client(client.WithPrefix("second"), client.WithRetryFor(0))
	if _, err := other.CreateLimit(ctx, "evil", 5); err == nil {
		t.Fatal("the second writer's create was answered as stored")
	}
	select {
	case <-second.Done():
	case <-ctx.Done():
		t.Fatal("the second writer did not stop after its append was refused")
	}
	if err := second.Err(); !errors.Is(err, broker.ErrDeposed) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("the second writer's reason: %v, want ErrDeposed saying the append was refused", err)
	}
	// Nothing of it reached the state: a restart of the first broker loads
	// db with its holder and no limit evil.
	rsRestartBroker(t, ev)
	info, err := first.GetLimit(ctx, "db")
	if err != nil || info.HoldersTotal != 1 || info.Holders[0].LeaseID != held.ID() {
		t.Fatalf("db after the restart: %+v, %v", info, err)
	}
	if _, err := first.GetLimit(ctx, "evil"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("limit evil after the restart: %v, want not found", err)
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
