package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// TestCreateRefusesLimitZero: a limit of 0 slots could never grant anything
// (PROTOCOL.md §5.7: every acquisition fails), so create refuses it as a
// usage error, saying what to do instead, and creates nothing.
func TestCreateRefusesLimitZero(t *testing.T) {
	e := embeddedBroker(t)
	code, _, stderr := at(e, "create", "z", "--limit", "0")
	if line := oneLine(t, "create --limit 0", stderr); code != exitUsage || !strings.Contains(line, "--limit") ||
		!strings.Contains(line, "at least 1") || !strings.Contains(line, "disable") {
		t.Errorf("create z --limit 0: exit %d, stderr %q; want 64 saying --limit must be at least 1 (and disable instead)", code, stderr)
	}
	if _, err := e.Client.GetLimit(testContext(t), "z"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get z after a refused create: %v, want not found", err)
	}
}

// TestCreateChecksFlagValuesBeforeTheBroker: a bad --limit or
// --slot-decay-per-second is reported (exit 64) even when the name is taken:
// the value is checked before the broker is asked.
func TestCreateChecksFlagValuesBeforeTheBroker(t *testing.T) {
	e := embeddedBroker(t)
	if code, _, stderr := at(e, "create", "x", "--limit", "1"); code != exitOK {
		t.Fatalf("create x: exit %d, stderr %q", code, stderr)
	}
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--limit", "-1"}, "--limit"},
		{[]string{"--limit", "1000000001"}, "--limit"},
		{[]string{"--limit", "1", "--slot-decay-per-second", "-2"}, "--slot-decay-per-second"},
		{[]string{"--limit", "1", "--slot-decay-per-second", "NaN"}, "--slot-decay-per-second"},
		{[]string{"--limit", "1", "--slot-decay-per-second", "2e6"}, "--slot-decay-per-second"},
		{[]string{"--limit", "1000000000", "--slot-decay-per-second", "1e-9"}, "--slot-decay-per-second"},
	} {
		what := "create x " + strings.Join(c.args, " ")
		code, _, stderr := at(e, append([]string{"create", "x"}, c.args...)...)
		if line := oneLine(t, what, stderr); code != exitUsage || !strings.Contains(line, c.flag) || strings.Contains(line, "exists") {
			t.Errorf("%s: exit %d, stderr %q; want 64 about %s, not that x exists", what, code, stderr, c.flag)
		}
	}
}
