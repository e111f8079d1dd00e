package main

import (
	"strings"
	"testing"
)

// TestTimeoutMessageReadsAsOneSentence: when --timeout ends a wait, run and
// rate say what timed out after how long, and why when no broker answered,
// in one sentence: no suffix after the cause, no "slotbroker: " inside.
func TestTimeoutMessageReadsAsOneSentence(t *testing.T) {
	t.Setenv("SLOTCTL_STRICT", "") // "other" does not exist
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "busy", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Acquire(ctx, "busy", 1); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := at(e, "run", "busy", "--timeout", "300ms", "--", "true")
	if line := oneLine(t, "run --timeout", stderr); code != exitTempFail || line != "slotctl: timed out after 300ms (--timeout) waiting for 1 slot on busy" {
		t.Errorf("run busy --timeout 300ms: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = at(e, "run", "busy,other", "--occupy", "1", "--timeout", "300ms", "--", "true")
	if last := lastLine(stderr); code != exitTempFail || last != "slotctl: timed out after 300ms (--timeout) waiting for 1 slot on each of busy,other" {
		t.Errorf("run busy,other --timeout 300ms: exit %d, stderr %q", code, stderr)
	}

	// No broker under the prefix: the cause follows, and nothing after it.
	for _, args := range [][]string{{"run", "x", "--timeout", "300ms", "--", "true"}, {"rate", "x", "--occupy", "2", "--timeout", "300ms"}} {
		code, _, stderr := at(e, append([]string{"--prefix", "nobroker"}, args...)...)
		last := lastLine(stderr)
		want := "slotctl: timed out after 300ms (--timeout) waiting for 1 slot on x: no slotbroker answered on nobroker.v1.acquire.x"
		if args[0] == "rate" {
			want = "slotctl: timed out after 300ms (--timeout) waiting for rate-limit admission of 2 slots on x: no slotbroker answered on nobroker.v1.acquire.x"
		}
		if code != exitUnavailable || !strings.HasPrefix(last, want) || strings.Contains(strings.TrimPrefix(last, "slotctl: "), "slotbroker: ") ||
			strings.HasSuffix(last, "300ms") || strings.HasSuffix(last, ")") {
			t.Errorf("%s with no broker: exit %d, last line %q; want 69 and %q, then the cause", strings.Join(args, " "), code, last, want)
		}
	}
}

// lastLine is the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
