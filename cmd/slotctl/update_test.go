package main

import (
	"strings"
	"testing"
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
