package integration

import (
	"context"
	"strconv"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// BenchmarkKeyFirstUseOverNATS is a TryAcquire of one slot and its Release
// through the Go client, broker and NATS server in this process: on one
// plain limit (the baseline) and on a new key of a per-key limit each time
// (the broker creates the key's limit and drops it at the release). Both
// run on the same broker, one after the other.
func BenchmarkKeyFirstUseOverNATS(b *testing.B) {
	ev := newEnv(b)
	c := ev.client()
	ctx := context.Background()
	if _, err := c.CreateLimit(ctx, "plain", 1); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		b.Fatal(err)
	}
	cycle := func(b *testing.B, name string, opts ...client.AcquireOption) {
		l, err := c.TryAcquire(ctx, name, 1, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("limit=plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cycle(b, "plain")
		}
	})
	b.Run("limit=new-key", func(b *testing.B) {
		keys := make([]string, 4096) // each key is dropped at its release: it comes back new
		for i := range keys {
			keys[i] = "k" + strconv.Itoa(i)
		}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			cycle(b, "tenant", client.WithKey(keys[i%len(keys)]))
			i++
		}
		b.StopTimer()
		if info, err := c.GetLimit(ctx, "tenant"); err != nil || info.KeysTotal != 0 {
			b.Fatalf("family after the run: %+v, %v; want no live key", info, err)
		}
	})
}
