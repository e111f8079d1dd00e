package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slotbroker/slotbroker/client"
)

// TestKeyHandoffsCountForTheirFamilyAndLeaveNothingBehind: a key of a
// per-key limit counts in its family's metrics (grants, waits, holds do),
// and the broker's memory follows the keys live, not the keys seen
// (PROTOCOL.md §15). The handoff of a queued grant on a key must count
// under the family too, and must not keep a per-key entry in the metrics
// once the key is gone: with a key per tenant or per user that map would
// grow for as long as the broker runs.
func TestKeyHandoffsCountForTheirFamilyAndLeaveNothingBehind(t *testing.T) {
	url := foServer(t)
	reg := prometheus.NewRegistry()
	b := foLeader(t, url, WithMetrics(reg))
	c, err := client.New(foConn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	const keys = 10
	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		first, err := c.Acquire(ctx, "tenant", 1, client.WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		queued := make(chan struct{})
		got := make(chan *client.Lease, 1)
		go func() {
			l, err := c.Acquire(ctx, "tenant", 1, client.WithKey(key), client.WithQueued(func(client.Queued) { close(queued) }))
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		<-queued
		if err := first.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if l := <-got; l != nil {
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	handoffs := func() (family, other uint64) {
		s := series(t, reg, "slotbroker_limit_handoff_seconds")
		return s["tenant"].GetHistogram().GetSampleCount(), s["_other"].GetHistogram().GetSampleCount()
	}
	foWait(10*time.Second, func() bool { f, o := handoffs(); return f+o == keys })
	family, other := handoffs()
	b.met.mu.Lock()
	entries := len(b.met.limits)
	b.met.mu.Unlock()
	if family != keys || entries > 1 {
		t.Fatalf("after %d handoffs on %d keys, all idle now: %d counted under tenant, %d under _other; the metrics keep %d per-limit entries (want 1: tenant)",
			keys, keys, family, other, entries)
	}
}
