package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// Scenario c's shape.
const (
	cWaiters = 16
	cHold    = time.Millisecond // work done while holding the slot
	// The poller's retry-after: a jittered sleep in [cPollMin, cPollMax).
	cPollMin = 10 * time.Millisecond
	cPollMax = 50 * time.Millisecond
)

func pollSleep() time.Duration { return cPollMin + rand.N(cPollMax-cPollMin) }

// scenarioC: 16 workers (each on its own NATS connection) contend for a
// limit of 1; each holds it for 1 ms and releases. Handoff is the time from
// the release being sent to the next holder's grant being received, with
// one clock, in the bench process. The poller does the same with TryAcquire
// and a jittered 10-50 ms retry-after.
func scenarioC(ctx context.Context, e *env) error {
	conns, done, err := connect(e.sb.URL(), cWaiters, "slotbench-c")
	if err != nil {
		return err
	}
	defer done()
	var cs []*client.Client
	for _, nc := range conns {
		c, err := client.New(nc, client.WithLogger(quiet))
		if err != nil {
			return err
		}
		defer c.Close()
		cs = append(cs, c)
	}
	for _, name := range []string{"c-push", "c-poll"} {
		if err := ensureLimit(ctx, cs[0], name, 1); err != nil {
			return err
		}
	}
	dur := 2 * e.cfg.dur // fewer events per second than the cycle scenarios
	push, err := handoff(ctx, cs, "c-push", e.cfg.warm, dur, func(ctx context.Context, c *client.Client, _ bool) (*client.Lease, error) {
		return c.Acquire(ctx, "c-push", 1)
	})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	r := statRow("c", "handoff release→grant, limit 1, 16 waiters", "slotbroker Acquire (pushed grant)", push)
	r.VsFloor = ratioD(push.P50, e.echoRemote.P50)
	r.Target = "p50 ≤ 3× NATS echo"
	r.Holds = holds(r.VsFloor <= 3)
	r.Note = "ops/s = handoffs/s"
	e.rep.add(r)
	poll, err := handoff(ctx, cs, "c-poll", e.cfg.warm, dur, func(ctx context.Context, c *client.Client, again bool) (*client.Lease, error) {
		if again {
			time.Sleep(pollSleep()) // a poller that just released rejoins with a random phase
		}
		for {
			l, err := c.TryAcquire(ctx, "c-poll", 1)
			if !errors.Is(err, client.ErrNoSlots) {
				return l, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(pollSleep()):
			}
		}
	})
	if err != nil {
		return fmt.Errorf("poller: %w", err)
	}
	r = statRow("c", "handoff release→grant, limit 1, 16 waiters", fmt.Sprintf("slotbroker poller (TryAcquire, retry-after %v-%v)", cPollMin, cPollMax), poll)
	r.VsFloor = ratioD(poll.P50, e.echoRemote.P50)
	r.Note = "ops/s = handoffs/s"
	e.rep.add(r)
	return nil
}

// handoff runs the workers until the window ends and returns the handoff
// latencies. acquire's again is true after the worker's first cycle.
func handoff(ctx context.Context, cs []*client.Client, name string, warm, d time.Duration,
	acquire func(context.Context, *client.Client, bool) (*client.Lease, error)) (stats, error) {
	start := time.Now()
	from, to := start.Add(warm), start.Add(warm+d)
	ctx, cancel := context.WithDeadline(ctx, to.Add(100*time.Millisecond))
	defer cancel()
	var released atomic.Int64 // unix nanos of the last release sent, 0 once taken
	var mu sync.Mutex
	var lat []time.Duration
	var first error
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			again := false
			for time.Now().Before(to) {
				l, err := acquire(ctx, c, again)
				again = true
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						first = errors.Join(first, err)
						mu.Unlock()
					}
					return
				}
				got := time.Now()
				if rel := released.Swap(0); rel != 0 && got.After(from) && got.Before(to) {
					mu.Lock()
					lat = append(lat, got.Sub(time.Unix(0, rel)))
					mu.Unlock()
				}
				time.Sleep(cHold)
				released.Store(time.Now().UnixNano())
				if err := l.Release(context.WithoutCancel(ctx)); err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	s := summarize(lat, len(lat), d)
	if s.N == 0 && first == nil {
		first = errors.New("no handoff measured")
	}
	return s, first
}
