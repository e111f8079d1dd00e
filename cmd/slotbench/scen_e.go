package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/slotbroker/slotbroker/client"
)

// eRate is the rate limit of scenario e, high enough that nearly every
// request is admitted: slots and decay per second.
const eRate = 1_000_000

// eSharedClients is how many Clients the 64 callers share in e's shared
// cases, one per NATS connection, as a service shares one Client among its
// goroutines.
const eSharedClients = 8

// scenarioE: rate-limit admissions on one shared limit by 1 and by 64
// clients (over 8 connections): TryRateLimit and RateLimit against
// redis_rate's GCRA Allow, and at 64 the callers sharing 8 Clients, whose
// calls the Client coalesces. Only admitted requests count.
func scenarioE(ctx context.Context, e *env) error {
	cs, done, err := e.clients(64)
	if err != nil {
		return err
	}
	defer done()
	if err := ensureLimit(ctx, cs[0], "e-rate", eRate, client.WithSlotDecay(eRate)); err != nil {
		return err
	}
	var lim *redis_rate.Limiter
	if e.rdb != nil {
		lim = redis_rate.NewLimiter(e.rdb)
	}
	rate := redis_rate.Limit{Rate: eRate, Burst: eRate, Period: time.Second}
	for _, workers := range []int{1, 64} {
		cas := fmt.Sprintf("admission, %d client(s), 1 limit", workers)
		// An admission is one request: no-work requests/s bound it.
		ping, err := pingBroker(ctx, e.cfg, e.sb.URL(), workers)
		if err != nil {
			return err
		}
		var peer stats
		if lim != nil {
			peer, err = loop(ctx, workers, e.cfg.warm, e.cfg.dur, func(ctx context.Context, _ int) (bool, error) {
				res, err := lim.Allow(ctx, "bench:rate", rate)
				if err != nil {
					return false, err
				}
				return res.Allowed > 0, nil
			})
			if err != nil {
				return fmt.Errorf("redis_rate: %w", err)
			}
			e.rep.add(statRow("e", cas, "redis_rate Allow (GCRA)", peer))
		}
		pr := statRow("e", fmt.Sprintf("requests to the broker process that do no work ($SRV.PING), %d client(s)", workers), "floor: slotbroker process (micro ping)", ping)
		if lim != nil {
			pr.VsPeer = ratioD(ping.Ops, peer.Ops)
		}
		pr.Note = "upper bound of admissions/s"
		e.rep.add(pr)
		type variant struct {
			sys    string
			try    bool
			shared bool // callers share 8 Clients, one per connection
		}
		variants := []variant{{"slotbroker TryRateLimit", true, false}, {"slotbroker RateLimit", false, false}}
		if workers > eSharedClients {
			variants = append(variants,
				variant{fmt.Sprintf("slotbroker TryRateLimit, %d callers sharing %d Clients (coalesced)", workers, eSharedClients), true, true},
				variant{fmt.Sprintf("slotbroker RateLimit, %d callers sharing %d Clients (coalesced, FIFO kept)", workers, eSharedClients), false, true})
		}
		for _, v := range variants {
			s, err := loop(ctx, workers, e.cfg.warm, e.cfg.dur, func(ctx context.Context, w int) (bool, error) {
				c := cs[w]
				if v.shared {
					c = cs[w%eSharedClients] // cs[i] is on connection i%8
				}
				var err error
				if v.try {
					err = c.TryRateLimit(ctx, "e-rate", 1)
				} else {
					err = c.RateLimit(ctx, "e-rate", 1)
				}
				if errors.Is(err, client.ErrNoSlots) {
					return false, nil
				}
				return err == nil, err
			})
			if err != nil {
				return fmt.Errorf("%s: %w", v.sys, err)
			}
			r := statRow("e", cas, v.sys, s)
			r.VsFloor = ratioD(s.Ops, ping.Ops)
			if lim != nil {
				r.VsPeer = ratioD(s.Ops, peer.Ops)
				if workers == 64 {
					r.Target = "admitted/s ≥ 1.5× redis_rate"
					r.Holds = holds(r.VsPeer >= 1.5)
				}
			}
			e.rep.add(r)
		}
	}
	return nil
}
