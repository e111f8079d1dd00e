package main

import (
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRevokeEndsAHeldLease: slotctl revoke frees a lease someone else holds
// (its holder's lease ends with ErrLeaseRevoked), says nothing was revoked
// with exit 65 for a lease not held, exits 77 for a lease of another limit
// and 64 without both arguments.
func TestRevokeEndsAHeldLease(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	for _, n := range []string{"db", "other"} {
		if _, err := e.Client.CreateLimit(ctx, n, 1); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := e.Client.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := at(e, "revoke", "other", lease.ID()); code != exitNoPerm {
		t.Errorf("revoke through another limit: exit %d, stderr %q; want 77", code, stderr)
	}
	code, stdout, stderr := at(e, "revoke", "db", lease.ID(), "--reason", "stuck")
	if code != exitOK || !strings.Contains(stdout, "revoked lease "+lease.ID()) || stderr != "" {
		t.Fatalf("revoke: exit %d, stdout %q, stderr %q; want 0 and \"revoked lease %s\"", code, stdout, stderr, lease.ID())
	}
	select {
	case <-lease.Done():
	case <-ctx.Done():
		t.Fatal("the revoked lease's Done did not close")
	}
	if err := lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Errorf("revoked lease's Err: %v; want ErrLeaseRevoked", err)
	}
	code, _, stderr = at(e, "revoke", "db", lease.ID())
	if line := oneLine(t, "second revoke", stderr); code != exitDataErr || !strings.Contains(line, "nothing was revoked") {
		t.Errorf("second revoke: exit %d, stderr %q; want 65 and \"nothing was revoked\"", code, stderr)
	}
	if code, _, stderr := at(e, "revoke", "db"); code != exitUsage {
		t.Errorf("revoke without a lease id: exit %d, stderr %q; want 64", code, stderr)
	}
}

// TestRunSignalsItsCommandWhenRevoked: slotctl run treats a revoked lease as
// a lost one: its command gets SIGTERM.
func TestRunSignalsItsCommandWhenRevoked(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	ev, ran := startRun(t, e, "run", "db", "--lease-ttl", "1s", "--", "sleep", "30")
	if code, _, stderr := at(e, "revoke", "db", ev.LeaseID, "--reason", "maintenance"); code != exitOK {
		t.Fatalf("revoke: exit %d, stderr %q", code, stderr)
	}
	select {
	case r := <-ran:
		if r.code != 128+int(syscall.SIGTERM) || !strings.Contains(r.stderr, "lease lost") || !strings.Contains(r.stderr, "revoked") {
			t.Errorf("run after its lease was revoked: exit %d, stderr %q; want %d and a lost (revoked) lease", r.code, r.stderr, 128+int(syscall.SIGTERM))
		}
	case <-ctx.Done():
		t.Fatal("run did not end after its lease was revoked")
	}
}

// runResult is how a slotctl run in the background ended.
type runResult struct {
	code   int
	stderr string
}

// startRun runs slotctl with args (a run on db) against e in the
// background and returns, once its lease is acquired, the acquired event
// and where its result arrives.
func startRun(t *testing.T, e *brokertest.Embedded, args ...string) (messages.Event, <-chan runResult) {
	t.Helper()
	acquired, err := e.Conn.SubscribeSync(messages.NewSubjects("").Event("db", messages.EventAcquired))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	ran := make(chan runResult, 1)
	go func() {
		// Streams safe to write from two goroutines: slotctl's own and the
		// child's output copier (a bytes.Buffer's ReadFrom loses writes
		// made while it waits; slotctl's real stderr is a file).
		var stdout, stderr syncBuffer
		code := execute(append([]string{"-s", e.URL}, args...), strings.NewReader(""), &stdout, &stderr)
		ran <- runResult{code, stderr.String()}
	}()
	m, err := acquired.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("run acquired nothing: %v", err)
	}
	var ev messages.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	return ev, ran
}
