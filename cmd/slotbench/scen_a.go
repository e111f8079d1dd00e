package main

import (
	"context"
	"fmt"

	"github.com/slotbroker/slotbroker/client"
)

// scenarioA: one client cycles acquire+release on an uncontended limit;
// the peer cycles the Redis semaphore the same way.
func scenarioA(ctx context.Context, e *env) error {
	cs, done, err := e.clients(1)
	if err != nil {
		return err
	}
	defer done()
	c := cs[0]
	if err := ensureLimit(ctx, c, "a-uncontended", 1); err != nil {
		return err
	}
	var redisS stats
	if e.rdb != nil {
		sem := redisSem{rdb: e.rdb, key: "bench:sem:a", limit: 1}
		redisS, err = loop(ctx, 1, e.cfg.warm, e.cfg.dur, func(ctx context.Context, _ int) (bool, error) {
			h, err := sem.try(ctx)
			if err != nil {
				return false, err
			}
			if h == "" {
				return false, fmt.Errorf("redis semaphore full while uncontended")
			}
			return true, sem.release(ctx, h)
		})
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		e.rep.add(statRow("a", "acquire+release cycle, 1 client", "redis Lua semaphore", redisS))
		// No cycle can beat one no-work round trip to the broker process.
		r := statRow("a", "one request to the broker process that does no work ($SRV.PING), 1 client", "floor: slotbroker process (micro ping)", e.pingBroker)
		r.VsPeer = ratioD(e.pingBroker.P50, redisS.P50)
		r.Note = "lower bound of any cycle"
		e.rep.add(r)
	}
	floor := 2 * e.pingBroker.P50
	for _, v := range []struct {
		name string
		try  bool
	}{{"Acquire+Release", false}, {"TryAcquire+Release", true}} {
		s, err := loop(ctx, 1, e.cfg.warm, e.cfg.dur, func(ctx context.Context, _ int) (bool, error) {
			var l *client.Lease
			var err error
			if v.try {
				l, err = c.TryAcquire(ctx, "a-uncontended", 1)
			} else {
				l, err = c.Acquire(ctx, "a-uncontended", 1)
			}
			if err != nil {
				return false, err
			}
			return true, l.Release(ctx)
		})
		if err != nil {
			return fmt.Errorf("slotbroker %s: %w", v.name, err)
		}
		r := statRow("a", v.name+" cycle, 1 client", "slotbroker", s)
		r.VsFloor = ratioD(s.P50, floor)
		if e.rdb != nil {
			r.VsPeer = ratioD(s.P50, redisS.P50)
			r.Target = "p50 ≤ 1.0× redis"
			r.Holds = holds(r.VsPeer <= 1.0)
		}
		e.rep.add(r)
	}
	return nil
}

// ratioD is a/b, 0 when b is 0.
func ratioD[T ~int64 | ~float64](a, b T) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
