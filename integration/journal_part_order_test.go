package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestAppendWhoseFirstPartPrecedesTheSnapshotIsNotHalfApplied: a broker
// that starts on a journal without a snapshot writes one at the journal's
// last sequence. When that sequence is part 1 of a two-part append that
// another writer (a deposed broker that woke up between its parts) is still
// sending, the snapshot holds neither part, and its part 2 lands right
// after the snapshot. A restart from that snapshot must not apply part 2
// alone: an append is applied all or nothing (PROTOCOL.md §12).
func TestAppendWhoseFirstPartPrecedesTheSnapshotIsNotHalfApplied(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev)
	part, lastSeq := journalPartWriter(ctx, t, ev)
	// The other writer stored part 1 of its append ...
	part("Y", "1/2", "split-a")
	// ... when this broker starts: no snapshot yet, so it writes one, at the
	// last complete append it applied (not at part 1 of Y, incomplete).
	rsStartBroker(t, ev)
	eventually(t, 10*time.Second, "the snapshot written at start", func() bool {
		_, man := storedState(t, ev.conn())
		return man != nil
	})
	if _, man := storedState(t, ev.conn()); man.Seq >= lastSeq() {
		t.Fatalf("the snapshot at start covers sequence %d, part 1 of the incomplete append Y (at %d)", man.Seq, lastSeq())
	}
	// The other writer's part 2 is stored after it (this broker has not
	// appended, so the condition on the last sequence holds).
	part("Y", "2/2", "split-b")
	rsRestartBroker(t, ev)

	recs := storedRecords(t, ev.conn())
	_, a := recs["limit.split-a"]
	_, b := recs["limit.split-b"]
	t.Logf("the independent reader loads split-a=%v split-b=%v", a, b)
	_, errA := ev.e.Client.GetLimit(ctx, "split-a")
	_, errB := ev.e.Client.GetLimit(ctx, "split-b")
	hasA, hasB := errA == nil, errB == nil
	if !hasA && !errors.Is(errA, client.ErrNotFound) || !hasB && !errors.Is(errB, client.ErrNotFound) {
		t.Fatalf("get limits: %v, %v", errA, errB)
	}
	if hasA != hasB {
		t.Fatalf("after the restart limit split-a exists=%v, split-b exists=%v: the two-part append Y was half applied (its part 2 alone, replayed after a snapshot taken at its part 1)", hasA, hasB)
	}
}

// TestJournalAppendIsAppliedAllOrNothing: an append larger than the max
// payload is stored in parts (headers Slotbroker-Batch and Slotbroker-Part
// "i/n"). A crash between its parts leaves an append that nobody was
// answered for: recovery drops it whole and applies the complete appends
// after it.
func TestJournalAppendIsAppliedAllOrNothing(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev)
	part, _ := journalPartWriter(ctx, t, ev)
	part("X", "1/2", "ghost") // its part 2 never came: a crash between parts
	part("Y", "1/2", "split-a")
	part("Y", "2/2", "split-b")
	rsStartBroker(t, ev)
	if _, err := ev.e.Client.GetLimit(ctx, "ghost"); err == nil {
		t.Fatal("the append whose parts stopped short was applied")
	}
	for _, n := range []string{"split-a", "split-b"} {
		if _, err := ev.e.Client.GetLimit(ctx, n); err != nil {
			t.Fatalf("limit %s of the complete two-part append: %v", n, err)
		}
	}
}
