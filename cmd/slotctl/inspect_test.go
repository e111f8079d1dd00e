package main

import (
	"bytes"
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
