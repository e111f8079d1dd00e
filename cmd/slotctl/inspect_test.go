package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestInspectShowsTotals: inspect prints the total count of holders and
// waiters, saying how many it shows when the broker listed fewer.
func TestInspectShowsTotals(t *testing.T) {
	info := &client.LimitInfo{Limit: messages.Limit{Name: "crowd", Limit: 10, Active: true},
		Holders:      []messages.Holder{{LeaseID: "l1", Occupy: 1}, {LeaseID: "l2", Occupy: 1}},
		HoldersTotal: 5,
		Waiters:      []messages.Waiter{{Position: 1, WaitID: "w", Occupy: 1}},
		WaitersTotal: 1,
	}
	var out bytes.Buffer
	if err := printInspect(&out, info, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Holders (5) (showing 2):", "Waiters (1):"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}
	// A broker that sends no totals lists all.
	info.HoldersTotal, info.WaitersTotal = 0, 0
	out.Reset()
	if err := printInspect(&out, info, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Holders (2):") || strings.Contains(out.String(), "showing") {
		t.Errorf("inspect output without totals:\n%s", out.String())
	}
	if d := describeHolders(&client.LimitInfo{Limit: messages.Limit{Name: "crowd", Limit: 10}, ActiveSlots: 5,
		Holders: info.Holders, HoldersTotal: 5}, time.Now()); !strings.Contains(d, "3 more") {
		t.Errorf("wait explanation %q does not say 3 more holders", d)
	}
}

// hostileHolder moves the cursor back to the line's start, erases the line
// and goes up one: printed raw, it rewrites what the operator sees.
const hostileHolder = "etl\r\x1b[2K\x1b[1A\xff\u202e"

// checkEscaped fails t when out carries a control character, a bidi
// override or invalid UTF-8 of hostileHolder raw, or lacks its escaped form.
func checkEscaped(t *testing.T, what, out string) {
	t.Helper()
	for _, raw := range []string{"\r", "\x1b", "\xff", "\u202e"} {
		if strings.Contains(out, raw) {
			t.Errorf("%s prints %q raw:\n%q", what, raw, out)
		}
	}
	if !strings.Contains(out, `etl\r\x1b[2K\x1b[1A\xff\u202e`) {
		t.Errorf("%s does not show the holder text escaped:\n%q", what, out)
	}
}

// TestHolderTextsAreEscapedForTheTerminal: a holder text is chosen by any
// user of a limit, and brokers before the check of control characters
// stored any: inspect's tables, run's waiting message and watch's event
// lines show its control characters, invisible format characters and
// invalid UTF-8 escaped, never raw; --json stays JSON, escaped by JSON.
func TestHolderTextsAreEscapedForTheTerminal(t *testing.T) {
	now := time.Now()
	info := &client.LimitInfo{Limit: messages.Limit{Name: "db", Limit: 2, Active: true}, ActiveSlots: 1,
		Holders: []messages.Holder{{LeaseID: "l1", Occupy: 1, Holder: hostileHolder, AcquiredAt: now}},
		Waiters: []messages.Waiter{{Position: 1, WaitID: "w1", Occupy: 2, Holder: hostileHolder, Names: []string{"db", "x"}}},
	}
	var out bytes.Buffer
	if err := printInspect(&out, info, now); err != nil {
		t.Fatal(err)
	}
	checkEscaped(t, "inspect", out.String())
	checkEscaped(t, "run's waiting message", describeHolders(info, now))
	checkEscaped(t, "watch", eventLine(client.Event{Kind: messages.EventAcquired, Limit: "db", LeaseID: "l1", Holder: hostileHolder, At: now}))

	out.Reset()
	if err := printJSON(&out, normalize(info)); err != nil {
		t.Fatal(err)
	}
	var back client.LimitInfo
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || strings.Contains(out.String(), "\x1b") {
		t.Fatalf("inspect --json: %v\n%q", err, out.String())
	}
}

func TestDisplayTextEscapesOnlyWhatIsNotPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"slotctl run make on h1":  "slotctl run make on h1",
		"naïve 日本 \\x1b \"q\"":    "naïve 日本 \\x1b \"q\"",
		"a\tb\nc\x00d\x7fe":       `a\tb\nc\x00d\x7fe`,
		"\x1b]0;title\x07":        `\x1b]0;title\a`,
		"\u0085\u2028\u200b":      `\u0085\u2028\u200b`,
		"bad \xc3\x28 utf8 \xff":  `bad \xc3( utf8 \xff`,
		"\ufffd is printable":     "\ufffd is printable",
		"right-to-left \u202eabc": `right-to-left \u202eabc`,
	} {
		if got := displayText(in); got != want {
			t.Errorf("displayText(%q) = %q; want %q", in, got, want)
		}
	}
}
