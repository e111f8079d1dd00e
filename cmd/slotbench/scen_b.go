package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// Scenario b's shape.
const (
	bWorkers = 64
	bHot     = 8 // slots of the hot limit
	// bRedisBackoff bounds the jittered sleep of a Redis semaphore caller
	// that found the hot limit full before it tries again (Redis has no queue).
	bRedisBackoff = 2 * time.Millisecond
)

// scenarioB: 64 goroutines (over 8 NATS connections) cycle acquire+release,
// each on its own limit, then all on one hot limit of 8 slots. The Redis
// semaphore runs the same, with a 64-connection pool.
func scenarioB(ctx context.Context, e *env) error {
	cs, done, err := e.clients(bWorkers)
	if err != nil {
		return err
	}
	defer done()
	for w := range bWorkers {
		if err := ensureLimit(ctx, cs[0], fmt.Sprintf("b-own-%d", w), 1); err != nil {
			return err
		}
	}
	if err := ensureLimit(ctx, cs[0], "b-hot", bHot); err != nil {
		return err
	}
	echo64, err := echo(ctx, e.cfg, e.sb.URL(), bWorkers)
	if err != nil {
		return err
	}
	e.rep.add(statRow("b", "NATS echo req-reply, 64 clients", "floor: nats (slotbroker's server)", echo64))
	ping64, err := pingBroker(ctx, e.cfg, e.sb.URL(), bWorkers)
	if err != nil {
		return err
	}
	kv64, err := kvPut(ctx, e.cfg, e.sb.URL(), bWorkers)
	if err != nil {
		return err
	}
	e.rep.add(statRow("b", "JetStream KV put, 64 clients", "floor: nats (slotbroker's server)", kv64))
	for _, v := range []struct {
		cas   string
		limit func(w int) (string, int)
	}{
		{"64 clients, 64 separate limits", func(w int) (string, int) { return fmt.Sprintf("b-own-%d", w), 1 }},
		{"64 clients, 1 hot limit of 8", func(int) (string, int) { return "b-hot", bHot }},
	} {
		var redisS stats
		if e.rdb != nil {
			var tries atomic.Int64
			redisS, err = loop(ctx, bWorkers, e.cfg.warm, e.cfg.dur, func(ctx context.Context, w int) (bool, error) {
				name, slots := v.limit(w)
				sem := redisSem{rdb: e.rdb, key: "bench:sem:" + name, limit: slots}
				h, n, err := sem.acquire(ctx, bRedisBackoff)
				tries.Add(int64(n))
				if err != nil {
					return false, err
				}
				return true, sem.release(ctx, h)
			})
			if err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			r := statRow("b", v.cas, "redis Lua semaphore", redisS)
			if n0, _ := v.limit(0); n0 == "b-hot" {
				r.Note = fmt.Sprintf("retry after jittered 0-%v sleep when full; %.1f tries/cycle", bRedisBackoff, float64(tries.Load())/max(1, float64(redisS.N)))
			}
			e.rep.add(r)
		}
		if n0, _ := v.limit(0); n0 != "b-hot" {
			// No-work requests/s against Redis cycles/s: what a cycle of one request could reach at best.
			r := statRow("b", "requests to the broker process that do no work ($SRV.PING), 64 clients", "floor: slotbroker process (micro ping)", ping64)
			if e.rdb != nil {
				r.VsPeer = ratioD(ping64.Ops, redisS.Ops)
			}
			r.Note = "a cycle of two requests reaches at most half"
			e.rep.add(r)
		}
		var cycles atomic.Int64
		seq0 := journalSeq(ctx, e.sb.URL())
		s, err := loop(ctx, bWorkers, e.cfg.warm, e.cfg.dur, func(ctx context.Context, w int) (bool, error) {
			name, _ := v.limit(w)
			l, err := cs[w].Acquire(ctx, name, 1)
			if err != nil {
				return false, err
			}
			cycles.Add(1)
			return true, l.Release(ctx)
		})
		if err != nil {
			return fmt.Errorf("slotbroker %s: %w", v.cas, err)
		}
		r := statRow("b", v.cas, "slotbroker Acquire+Release", s)
		if seq1 := journalSeq(ctx, e.sb.URL()); seq1 > seq0 && cycles.Load() > 0 {
			// Journal appends per cycle (target ≤ 0.25): group commit's batching.
			r.Value = float64(seq1-seq0) / float64(cycles.Load())
			r.Unit = "appends/cycle"
		}
		r.VsFloor = ratioD(s.Ops, ping64.Ops/2)
		if e.rdb != nil {
			r.VsPeer = ratioD(s.Ops, redisS.Ops)
			r.Target = "cycles/s ≥ 1.5× redis"
			r.Holds = holds(r.VsPeer >= 1.5)
		}
		e.rep.add(r)
	}
	return nil
}

// journalSeq is the last sequence of the broker's journal stream (0 when
// it cannot be read, e.g. a broker from before the journal).
func journalSeq(ctx context.Context, url string) uint64 {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	st, err := js.Stream(ctx, "SLOTBROKER_JOURNAL_"+messages.DefaultBucket)
	if err != nil {
		return 0
	}
	return st.CachedInfo().State.LastSeq
}
