package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/messages"
)

// scenarioG: a broker of its own; its VmRSS is read when idle, after N held
// leases (raw try-acquires, 1 h TTL, on one limit of N slots), and after N
// queued waiters (on a full limit of 1 slot). Each delta is divided by N.
func scenarioG(ctx context.Context, e *env) error {
	bi, err := newBroker(e.bin, e.tmp, "memory")
	if err != nil {
		return err
	}
	defer bi.stop()
	if _, err := bi.start(ctx, "probe"); err != nil {
		return err
	}
	conns, done, err := connect(bi.URL(), 8, "slotbench-g")
	if err != nil {
		return err
	}
	defer done()
	n := e.cfg.memN
	for _, l := range []struct {
		name  string
		slots int
	}{{"g-leases", n}, {"g-waiters", 1}} {
		var r messages.LimitReply
		if err := rawCall(conns[0], subjects.Verb(messages.VerbCreate, l.name), &messages.CreateRequest{Limit: l.slots}, &r); err != nil || r.Error != nil {
			return fmt.Errorf("create %s: %v %v", l.name, err, r.Error)
		}
	}
	ttl := time.Hour.Milliseconds()
	if _, err := rawAcquire(conns[0], "g-waiters", &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, Try: true}, false); err != nil {
		return err
	}
	settle := func() (int64, error) {
		time.Sleep(2 * time.Second)
		return bi.RSS()
	}
	rss0, err := settle()
	if err != nil {
		return err
	}
	err = flood(ctx, conns, n, fWorkers, func(nc *nats.Conn, i int) error {
		_, err := rawAcquire(nc, "g-leases", &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, Try: true}, false)
		return err
	})
	if err != nil {
		return err
	}
	rss1, err := settle()
	if err != nil {
		return err
	}
	// Notify subjects in the requester's inbox (_INBOX.<token>.<token>), spread
	// over 64 inboxes: the broker bounds the waiters of one inbox (10,000 by default).
	inbox := "_INBOX.slotbench-g-" + nuid.Next() + "-"
	err = flood(ctx, conns, n, fWorkers, func(nc *nats.Conn, i int) error {
		id := nuid.Next()
		notify := fmt.Sprintf("%s%d.%s", inbox, i%64, id)
		_, err := rawAcquire(nc, "g-waiters", &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, WaitID: id, Notify: notify}, true)
		return err
	})
	if err != nil {
		return err
	}
	rss2, err := settle()
	if err != nil {
		return err
	}
	if e.cfg.memprofile != "" {
		if err := writeHeap(e.cfg.memprofile); err != nil {
			return err
		}
	}
	where := "slotbroker process VmRSS"
	if bi.PID() == 0 {
		where = "bench process VmRSS (--inproc: includes the clients)"
	}
	for _, m := range []struct {
		what     string
		from, to int64
	}{{"held lease", rss0, rss1}, {"queued waiter", rss1, rss2}} {
		per := float64(m.to-m.from) / float64(n)
		e.rep.add(row{Scenario: "g", Case: fmt.Sprintf("memory per %s, %d of them", m.what, n), System: where,
			Value: per, Unit: "B", Note: fmt.Sprintf("RSS %d→%d MiB", m.from>>20, m.to>>20),
			Target: "≤ 1 KiB", Holds: holds(per <= 1024)})
	}
	return nil
}

// writeHeap writes a heap profile after a GC.
func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}
