package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestDeletingAFamilyStopsItsKeysTimers: the broker's timers follow the
// keys live, not the keys seen (PROTOCOL.md §15: memory grows with the keys
// in use only). A rate key that is draining has a timer for when it has
// drained; a key dropped when idle stops it, and so must a key deleted with
// its family: otherwise every key of a deleted family keeps a timer (and an
// entry in the Broker's wakers) until its bucket would have drained, which
// on a slow rate limit is hours to years away.
func TestDeletingAFamilyStopsItsKeysTimers(t *testing.T) {
	url := foServer(t)
	b := foLeader(t, url)
	c, err := client.New(foConn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One slot per key, draining in 1000 s.
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey(), client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	const keys = 20
	for i := range keys {
		if err := c.TryRateLimit(ctx, "tenant", 1, client.WithKey(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	wakers := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.wakers)
	}
	if n := wakers(); n != keys {
		t.Fatalf("%d timers for %d draining keys before the delete", n, keys)
	}
	if _, err := c.DeleteLimit(ctx, "tenant"); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	live := len(b.st.limits)
	b.mu.Unlock()
	if n := wakers(); n != 0 {
		t.Fatalf("after deleting the family (%d limits live) the broker still keeps %d key timers, each until its bucket would have drained (1000 s)", live, n)
	}
}
