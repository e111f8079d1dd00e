package integration

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// Concurrent TryRateLimit calls on one Client go to the broker in counted
// batches: exactly the limit's slots are admitted, every other call gets
// ErrNoSlots, and fewer requests than calls cross the wire.
func TestTryRateLimitCoalesced(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	const slots, calls = 50, 400
	if _, err := c.CreateLimit(ctx, "burst", slots, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	counted := make(chan int, calls)
	watcher := ev.conn()
	sub, err := watcher.Subscribe(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "burst"), func(m *nats.Msg) {
		requests.Add(1)
		var r messages.AcquireRequest
		if _, err := messages.Decode(m.Data, &r); err == nil {
			counted <- max(r.Count, 1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}

	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := c.TryRateLimit(ctx, "burst", 1)
			switch {
			case err == nil:
				admitted.Add(1)
			case errors.Is(err, client.ErrNoSlots):
				refused.Add(1)
			default:
				t.Errorf("TryRateLimit: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if admitted.Load() != slots || refused.Load() != calls-slots {
		t.Fatalf("admitted %d, refused %d; want %d and %d", admitted.Load(), refused.Load(), slots, calls-slots)
	}
	info, err := c.GetLimit(ctx, "burst")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != slots {
		t.Fatalf("broker counts %d active slots, want %d", info.ActiveSlots, slots)
	}
	// Every call was in exactly one request.
	total := 0
	eventually(t, 10*time.Second, "every request seen by the watcher", func() bool {
		for len(counted) > 0 {
			total += <-counted
		}
		return total == calls
	})
	if n := requests.Load(); n >= calls {
		t.Fatalf("%d requests for %d concurrent calls: nothing was coalesced", n, calls)
	}
	t.Logf("%d calls in %d requests", calls, requests.Load())
}
