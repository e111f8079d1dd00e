package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// BenchmarkCycle measures one acquire+release cycle of an uncontended limit,
// broker and NATS server in this process (over loopback TCP).
func BenchmarkCycle(b *testing.B) {
	ev := newEnv(b)
	c := ev.client()
	ctx := context.Background()
	if _, err := c.CreateLimit(ctx, "bench", 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l, err := c.Acquire(ctx, "bench", 1)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCycleParallel runs cycles from many goroutines over 8
// connections, each on its own limit.
func BenchmarkCycleParallel(b *testing.B) {
	ev := newEnv(b)
	ctx := context.Background()
	clients := make([]*client.Client, 8)
	for i := range clients {
		clients[i] = ev.client()
	}
	var next atomic.Int64
	for i := range 64 {
		if _, err := clients[0].CreateLimit(ctx, fmt.Sprintf("p%d", i), 1); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) - 1
		c := clients[i%8]
		name := fmt.Sprintf("p%d", i%64)
		for pb.Next() {
			l, err := c.Acquire(ctx, name, 1)
			if err != nil {
				b.Error(err)
				return
			}
			if err := l.Release(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
