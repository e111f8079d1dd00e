package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// fWorkers is the number of concurrent requests that build the state of f and g.
const fWorkers = 64

// scenarioF: a broker of its own is filled with limits and held leases (raw
// try-acquires with a 1 h TTL over 8 connections), killed with SIGKILL, and
// started again on the same data directory; the figure is the time from the
// new process's start to its first answered GetLimit.
func scenarioF(ctx context.Context, e *env) error {
	bi, err := newBroker(e.bin, e.tmp, "restart")
	if err != nil {
		return err
	}
	defer bi.stop()
	if _, err := bi.start(ctx, "probe"); err != nil {
		return err
	}
	conns, done, err := connect(bi.URL(), 8, "slotbench-f")
	if err != nil {
		return err
	}
	defer done()
	nl, nlease := e.cfg.limitsF, e.cfg.leasesF
	per := (nlease + nl - 1) / nl
	t0 := time.Now()
	err = flood(ctx, conns, nl, fWorkers, func(nc *nats.Conn, i int) error {
		var r messages.LimitReply
		if err := rawCall(nc, subjects.Verb(messages.VerbCreate, fName(i)), &messages.CreateRequest{Limit: per}, &r); err != nil {
			return err
		}
		if r.Error != nil {
			return fmt.Errorf("create: %v", r.Error)
		}
		return nil
	})
	if err != nil {
		return err
	}
	logf("  %d limits created in %v", nl, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	ttl := time.Hour.Milliseconds()
	err = flood(ctx, conns, nlease, fWorkers, func(nc *nats.Conn, i int) error {
		_, err := rawAcquire(nc, fName(i%nl), &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, Try: true}, false)
		return err
	})
	if err != nil {
		return err
	}
	fill := time.Since(t0)
	logf("  %d leases acquired in %v (%.0f/s)", nlease, fill.Round(time.Millisecond), float64(nlease)/fill.Seconds())
	time.Sleep(1500 * time.Millisecond) // past one sync interval: everything is on disk
	rss, _ := bi.RSS()
	done()
	bi.kill()
	d, err := bi.start(ctx, fName(nl-1))
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	// Check that the state came back.
	conns2, done2, err := connect(bi.URL(), 1, "slotbench-f-check")
	if err != nil {
		return err
	}
	defer done2()
	var r messages.LimitReply
	if err := rawCall(conns2[0], subjects.Verb(messages.VerbGet, fName(0)), struct{}{}, &r); err != nil {
		return err
	}
	note := "state after restart unreadable"
	if r.Limit != nil {
		note = fmt.Sprintf("limit f-0 came back with %d/%d holders; before kill: RSS %d MiB, fill %.0f leases/s", len(r.Limit.Holders), per, rss>>20, float64(nlease)/fill.Seconds())
	}
	e.rep.add(row{Scenario: "f", Case: fmt.Sprintf("restart to first GetLimit, %d limits, %d leases", nl, nlease),
		System: "slotbroker (SIGKILL, same data dir)", Value: d.Seconds(), Unit: "s", Note: note,
		Target: "≤ 3 s", Holds: holds(d <= 3*time.Second)})
	return nil
}

func fName(i int) string { return fmt.Sprintf("f-%d", i) }
