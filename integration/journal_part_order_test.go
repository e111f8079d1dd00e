package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestAppendWhoseFirstPartPrecedesATakeoverIsNeverApplied: a broker that
// starts claims the journal with an entry after the last one it read. When
// that is part 1 of a two-part append that another writer (a deposed broker
// that woke up between its parts) is still sending, the writer's part 2 is
// refused (the journal moved on), the snapshot written at start holds
// neither part, and no restart applies part 1 alone: an append is applied
// all or nothing (PROTOCOL.md §12).
func TestAppendWhoseFirstPartPrecedesATakeoverIsNeverApplied(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	rsStopBroker(t, ev)
	part, lastSeq := journalPartTryWriter(ctx, t, ev)
	// The other writer stored part 1 of its append ...
	if err := part("Y", "1/2", "split-a"); err != nil {
		t.Fatal(err)
	}
	partOne := lastSeq()
	// ... when this broker starts and claims the journal.
	rsStartBroker(t, ev)
	eventually(t, 10*time.Second, "the snapshot written at start", func() bool {
		_, man := storedState(t, ev.conn())
		return man != nil
	})
	// The other writer's part 2 is refused: the claim entry follows part 1.
	if err := part("Y", "2/2", "split-b"); err == nil {
		t.Fatalf("part 2 of the other writer's append was stored after this broker claimed the journal at start (part 1 at %d)", partOne)
	}
	rsRestartBroker(t, ev)
	recs := storedRecords(t, ev.conn())
	if _, a := recs["limit.split-a"]; a {
		t.Fatal("the independent reader loads split-a: part 1 of an append that never completed was applied")
	}
	for _, name := range []string{"split-a", "split-b"} {
		if _, err := ev.e.Client.GetLimit(ctx, name); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("limit %s after the restart: %v, want not found (the append never completed)", name, err)
		}
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
