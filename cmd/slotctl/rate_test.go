package main

import (
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestRateTryExitsTempFailWhenNoSlotIsFree: rate --try never waits: it exits
// 0 when admitted now, 75 at once when the bucket is full.
func TestRateTryExitsTempFailWhenNoSlotIsFree(t *testing.T) {
	e := embeddedBroker(t)
	if _, err := e.Client.CreateLimit(testContext(t), "api", 1, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := at(e, "rate", "api", "--try"); code != exitOK {
		t.Fatalf("rate --try on an empty bucket: exit %d, stderr %q; want 0", code, stderr)
	}
	start := time.Now()
	code, _, stderr := at(e, "rate", "api", "--try")
	if line := oneLine(t, "rate --try", stderr); code != exitTempFail || !strings.Contains(line, "--try") || time.Since(start) > 3*time.Second {
		t.Errorf("rate --try on a full bucket: exit %d after %v, stderr %q; want 75 at once, naming --try", code, time.Since(start), stderr)
	}
	if code, _, stderr := at(e, "rate", "api", "--try", "--timeout", "1s"); code != exitUsage {
		t.Errorf("rate --try --timeout: exit %d, stderr %q; want 64", code, stderr)
	}
}
