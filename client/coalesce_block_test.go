package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

func embedded(t *testing.T) *brokertest.Embedded {
	t.Helper()
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func newClient(t *testing.T, e *brokertest.Embedded, opts ...client.Option) (*client.Client, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, nc
}

// countAcquires counts the acquire requests sent on name.
func countAcquires(t *testing.T, e *brokertest.Embedded, nc *nats.Conn, name string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	if _, err := nc.Subscribe(e.Broker.Subjects().Verb(messages.VerbAcquire, name), func(*nats.Msg) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

// TestRateLimitCoalesced: concurrent RateLimit calls on one Client, while
// the limit has room, go in far fewer requests than calls, and every call
// is admitted exactly once.
func TestRateLimitCoalesced(t *testing.T) {
	e := embedded(t)
	c, nc := newClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "r", 100000, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	sent := countAcquires(t, e, nc, "r")
	const calls = 400
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.RateLimit(ctx, "r", 1)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	info, err := c.GetLimit(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveSlots != calls {
		t.Fatalf("%d slots taken by %d admitted calls", info.ActiveSlots, calls)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := sent.Load(); n >= calls/2 {
		t.Fatalf("%d requests for %d concurrent calls: not coalesced", n, calls)
	}
	t.Logf("%d calls in %d requests", calls, sent.Load())
}

// TestRateLimitCoalescedKeepsOrder: one Client's RateLimit calls are
// admitted in the order they were made, through a limit that admits some at
// once (one counted try), refuses the rest, and queues them. Calls admitted
// by one counted try return together, in any order: a call counts as
// overtaken only if one made after it returned more than half a slot's
// decay (50 ms) before it.
func TestRateLimitCoalescedKeepsOrder(t *testing.T) {
	for _, room := range []int{1, 3} {
		t.Run(fmt.Sprintf("room %d", room), func(t *testing.T) {
			e := embedded(t)
			c, _ := newClient(t, e)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// A slot decays every 100 ms; the bucket starts with room slots free.
			if _, err := c.CreateLimit(ctx, "o", room, client.WithSlotDecay(10)); err != nil {
				t.Fatal(err)
			}
			registered := make(chan struct{}, 1)
			client.SetRateCallHook(c, func() { registered <- struct{}{} })
			const calls = 12
			admitted := make([]time.Time, calls)
			var wg sync.WaitGroup
			for i := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := c.RateLimit(ctx, "o", 1); err != nil {
						t.Error(err)
						return
					}
					admitted[i] = time.Now()
				}()
				<-registered // call i has its place before call i+1 is made
			}
			wg.Wait()
			for i := range calls {
				for j := i + 1; j < calls; j++ {
					if admitted[j].Before(admitted[i].Add(-50 * time.Millisecond)) {
						t.Fatalf("call %d admitted %v before call %d, made before it", j, admitted[i].Sub(admitted[j]), i)
					}
				}
			}
			if info, err := c.GetLimit(ctx, "o"); err != nil || len(info.Waiters) != 0 {
				t.Fatalf("after: %+v, %v; want no waiters", info, err)
			}
		})
	}
}

// TestRateLimitCoalescedTimeout: a call that gives up while waiting behind
// the Client's other calls returns ErrTimeout, takes no slot, and the calls
// after it are still admitted in order.
func TestRateLimitCoalescedTimeout(t *testing.T) {
	e := embedded(t)
	c, _ := newClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One slot per 300 ms, bucket full.
	if _, err := c.CreateLimit(ctx, "t", 1, client.WithSlotDecay(1.0/0.3)); err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	results := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		var opts []client.AcquireOption
		if i == 1 {
			opts = append(opts, client.WithTimeout(50*time.Millisecond))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.RateLimit(ctx, "t", 1, opts...)
		}()
		<-registered
	}
	wg.Wait()
	if results[0] != nil || results[2] != nil {
		t.Fatalf("calls 0 and 2: %v, %v; want both admitted", results[0], results[2])
	}
	if !errors.Is(results[1], client.ErrTimeout) {
		t.Fatalf("call 1 with a 50 ms timeout: %v, want ErrTimeout", results[1])
	}
	info, err := c.GetLimit(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if info.DeniedSlots != 0 || len(info.Waiters) != 0 {
		t.Fatalf("after: denied %d, waiters %d; want 0 and 0", info.DeniedSlots, len(info.Waiters))
	}
}
