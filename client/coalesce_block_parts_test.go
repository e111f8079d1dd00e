package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestCoalescedRateLimitOrderAcrossMaxCountParts: more than MaxCount RateLimit
// calls wait behind the leader while the limit has room. admitBatch sends
// one probe per part of MaxCount; the first part is admitted only in part
// (the limit fills), its refused calls are kept for their turns, and then
// the second part's probe is sent anyway: the slots that decayed meanwhile
// go to the last call, ahead of ~500 earlier calls of the same Client that
// were refused and still wait for their turns. FIFO among one Client's
// RateLimit calls is broken.
func TestCoalescedRateLimitOrderAcrossMaxCountParts(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// 500 slots, decaying fast: the first part (1000 calls) fills it, and a
	// few slots are free again by the time the next probe arrives.
	if _, err := c.CreateLimit(ctx, "parts", 500, client.WithSlotDecay(50000)); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e) // the leader is retried while every other call registers
	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	const calls = messages.MaxCount + 2 // the leader, a full part, and one more
	var seq atomic.Int64
	order := make([]int64, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.RateLimit(ctx, "parts", 1); err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			order[i] = seq.Add(1)
		}()
		<-registered
	}
	rvStartBroker(t, e)
	wg.Wait()
	last := order[calls-1]
	ahead := 0
	for i := 0; i < calls-1; i++ {
		if order[i] > last {
			ahead++
		}
	}
	// A few may be goroutine scheduling noise; hundreds are not.
	if ahead > 20 {
		t.Fatalf("the last RateLimit call returned admitted before %d of the %d calls made before it", ahead, calls-1)
	}
}

// TestCoalescedRateLimitLeaderOutageTwoWindows: the leader's request meets no
// broker and fails with ErrUnavailable after WithRetryFor. The calls that
// waited behind it all that time do not fail with it: the loop sends the
// probe (fails at once), then the first call's own turn is retried for a
// whole new window, and only then do the others fail. Every call behind the
// leader fails after two windows instead of one (a turn that finds no
// broker fails the later turns at once, but the leader is not counted as
// one).
func TestCoalescedRateLimitLeaderOutageTwoWindows(t *testing.T) {
	const window = time.Second
	e := embedded(t)
	c, _ := rvQuietClient(t, e, client.WithRetryFor(window))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "down", 100, client.WithSlotDecay(1)); err != nil {
		t.Fatal(err)
	}
	rvStopBroker(t, e)
	defer rvStartBroker(t, e)

	registered := make(chan struct{}, 1)
	client.SetRateCallHook(c, func() { registered <- struct{}{} })
	type result struct {
		err  error
		took time.Duration
	}
	const calls = 4 // the leader and 3 behind it
	results := make(chan result, calls)
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.RateLimit(ctx, "down", 1)
			results <- result{err, time.Since(start)}
		}()
		<-registered
	}
	for range calls {
		r := <-results
		if !errors.Is(r.err, client.ErrUnavailable) || r.took > window+window/2 {
			t.Errorf("RateLimit with no broker: %v after %v; want ErrUnavailable after about WithRetryFor (%v)", r.err, r.took.Round(10*time.Millisecond), window)
		}
	}
}

// TestCoalescedRateLimitStressGiveUps (passes): many RateLimit calls on one key,
// contended and not, a third giving up at random moments, while the limit
// goes between room and contention. Every call returns (nil or its context
// error), nothing races, and no goroutine of the coalescer stays behind.
func TestCoalescedRateLimitStressGiveUps(t *testing.T) {
	e := embedded(t)
	c, _ := rvQuietClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "stress", 5, client.WithSlotDecay(400)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for round := range 20 {
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx := ctx
				if (i+round)%3 == 0 {
					var cc context.CancelFunc
					cctx, cc = context.WithTimeout(ctx, time.Duration(i%7)*time.Millisecond)
					defer cc()
				}
				err := c.RateLimit(cctx, "stress", 1)
				if err != nil && cctx.Err() == nil {
					t.Errorf("RateLimit: %v", err)
				}
			}()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("RateLimit calls still blocked after 40s")
	}
}
