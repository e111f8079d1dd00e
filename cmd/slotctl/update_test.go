package main

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestUpdateRefusesLimitZero: update refuses --limit 0 (and other values
// outside 1 to 1,000,000,000) as a usage error and changes nothing.
func TestUpdateRefusesLimitZero(t *testing.T) {
	e := embeddedBroker(t)
	if _, err := e.Client.CreateLimit(testContext(t), "u", 2); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0", "-1"} {
		code, _, stderr := at(e, "update", "u", "--limit", v)
		if line := oneLine(t, "update --limit "+v, stderr); code != exitUsage || !strings.Contains(line, "--limit") || !strings.Contains(line, "at least 1") {
			t.Errorf("update u --limit %s: exit %d, stderr %q; want 64 saying --limit must be at least 1", v, code, stderr)
		}
	}
	if info, err := e.Client.GetLimit(testContext(t), "u"); err != nil || info.Limit.Limit != 2 {
		t.Errorf("u after refused updates: %+v, %v; want 2 slots", info, err)
	}
}

// TestUpdateRevokePrintsTheRevokedLeases: update --limit N --revoke revokes
// the newest leases over N and prints them, one a line ("revoked" in
// --json); their holders are told at once. --by needs --revoke.
func TestUpdateRevokePrintsTheRevokedLeases(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "db", 3); err != nil {
		t.Fatal(err)
	}
	var held []*client.Lease
	for range 3 {
		l, err := e.Client.Acquire(ctx, "db", 1, client.WithLeaseTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	if code, _, stderr := at(e, "update", "db", "--limit", "2", "--by", "ops"); code != exitUsage || !strings.Contains(stderr, "--revoke") {
		t.Errorf("update --by without --revoke: exit %d, stderr %q; want 64 naming --revoke", code, stderr)
	}

	code, stdout, stderr := at(e, "update", "db", "--limit", "2", "--revoke", "--by", "ops")
	want := "updated limit \"db\": 2 slots, active\nrevoked lease " + held[2].ID() + " on db\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Fatalf("update --revoke: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	select {
	case <-held[2].Done():
	case <-ctx.Done():
		t.Fatal("the revoked lease's Done did not close")
	}
	if err := held[2].Err(); !errors.Is(err, client.ErrLeaseRevoked) || !strings.Contains(err.Error(), "limit lowered to 2") {
		t.Errorf("revoked lease's Err: %v; want ErrLeaseRevoked saying the limit was lowered to 2", err)
	}

	code, stdout, stderr = at(e, "update", "db", "--limit", "1", "--revoke", "--json")
	var got struct {
		Name    string   `json:"name"`
		Limit   int      `json:"limit"`
		Revoked []string `json:"revoked"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); code != exitOK || err != nil || got.Name != "db" || got.Limit != 1 ||
		!slices.Equal(got.Revoked, []string{held[1].ID()}) {
		t.Fatalf("update --revoke --json: exit %d, stdout %q (%v), stderr %q; want db, limit 1, revoked [%s]", code, stdout, err, stderr, held[1].ID())
	}

	code, stdout, _ = at(e, "update", "db", "--limit", "1", "--revoke", "--json")
	if err := json.Unmarshal([]byte(stdout), &got); code != exitOK || err != nil || got.Revoked == nil || len(got.Revoked) != 0 {
		t.Errorf("update --revoke --json with nothing over the limit: exit %d, stdout %q; want \"revoked\": []", code, stdout)
	}
	code, stdout, _ = at(e, "update", "db", "--limit", "1", "--revoke")
	if code != exitOK || !strings.Contains(stdout, "revoked no lease") {
		t.Errorf("update --revoke with nothing over the limit: exit %d, stdout %q; want \"revoked no lease\"", code, stdout)
	}
	select {
	case <-held[0].Done():
		t.Fatalf("the oldest lease ended: %v", held[0].Err())
	default:
	}
}

// TestUpdateRevokeSignalsRunCommand: a slotctl run whose lease update
// --revoke takes back sends its command SIGTERM at once: told by the
// broker's notice, not by a renewal (a minute's lease renews after 20 s).
func TestUpdateRevokeSignalsRunCommand(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatal(err)
	}
	_, ran := startRun(t, e, "run", "db", "--occupy", "2", "--lease-ttl", "1m", "--", "sleep", "30")
	if code, _, stderr := at(e, "update", "db", "--limit", "1", "--revoke", "--by", "ops"); code != exitOK {
		t.Fatalf("update --revoke: exit %d, stderr %q", code, stderr)
	}
	select {
	case r := <-ran:
		if r.code != 128+int(syscall.SIGTERM) || !strings.Contains(r.stderr, "revoked") || !strings.Contains(r.stderr, "limit lowered to 1") {
			t.Errorf("run after its lease was revoked: exit %d, stderr %q; want %d and the revocation's reason", r.code, r.stderr, 128+int(syscall.SIGTERM))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end within 10 s of its lease's revocation (its renewal is 20 s away)")
	}
}
