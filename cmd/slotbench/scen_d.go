package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/messages"
)

// dReleases is the number of releases measured per queue length.
const dReleases = 5

// scenarioD: with N waiters queued on a limit of 1, count the messages on
// the wire (a subscriber on ">" on its own connection) from one release
// until the next waiter's grant is accepted and traffic is quiet again.
func scenarioD(ctx context.Context, e *env) error {
	var base float64
	for i, n := range e.cfg.waitersD {
		perRel, bytes, err := wakeCost(ctx, e, fmt.Sprintf("d-%d", n), n)
		if err != nil {
			return fmt.Errorf("%d waiters: %w", n, err)
		}
		r := row{Scenario: "d", Case: fmt.Sprintf("messages per release, %d queued waiters", n), System: "slotbroker",
			Value: perRel, Unit: "msgs", Note: fmt.Sprintf("%.0f bytes", bytes)}
		if i == 0 {
			base = perRel
		} else {
			r.VsFloor = ratioD(perRel, base)
			r.Target = fmt.Sprintf("same as at %d waiters", e.cfg.waitersD[0])
			r.Holds = holds(perRel <= base+0.5)
		}
		e.rep.add(r)
	}
	return nil
}

// wakeCost queues n raw waiters behind one holder of name, then releases
// dReleases times, each release freeing the lease the previous grant made.
func wakeCost(ctx context.Context, e *env, name string, n int) (msgs, bytes float64, err error) {
	cs, done, err := e.clients(1)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	if err := ensureLimit(ctx, cs[0], name, 1); err != nil {
		return 0, 0, err
	}
	ttl := time.Hour.Milliseconds()
	first, err := rawAcquire(e.conns[0], name, &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, Try: true}, false)
	if err != nil {
		return 0, 0, err
	}
	// Grants are accepted here and their lease ids handed to the loop.
	grants := make(chan string, dReleases+1)
	gconn, gdone, err := connect(e.sb.URL(), 1, "slotbench-d-grants")
	if err != nil {
		return 0, 0, err
	}
	defer gdone()
	// In the requester's inbox (_INBOX.<token>.<token>), as the broker requires.
	notify := "_INBOX.slotbench-d-" + nuid.Next() + "."
	gsub, err := gconn[0].Subscribe(notify+"*", func(m *nats.Msg) {
		var g messages.Grant
		enc, err := messages.Decode(m.Data, &g)
		if err != nil || g.Lease == nil {
			return
		}
		data, _ := messages.Marshal(enc, messages.GrantAck{Accept: true})
		_ = m.Respond(data)
		select {
		case grants <- g.Lease.ID:
		default:
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer gsub.Unsubscribe()
	if err := gconn[0].Flush(); err != nil {
		return 0, 0, err
	}
	logf("  queueing %d waiters on %s", n, name)
	err = flood(ctx, e.conns, n, 64, func(nc *nats.Conn, i int) error {
		id := nuid.Next()
		_, err := rawAcquire(nc, name, &messages.AcquireRequest{Occupy: 1, TTLMillis: ttl, WaitID: id, Notify: notify + id}, true)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(200 * time.Millisecond) // let the queueing traffic settle
	wconn, wdone, err := connect(e.sb.URL(), 1, "slotbench-d-wire")
	if err != nil {
		return 0, 0, err
	}
	defer wdone()
	var count, size atomic.Int64
	var last atomic.Int64
	var counting atomic.Bool
	var smu sync.Mutex
	seen := map[string]int{} // subject shapes of the counted messages
	wsub, err := wconn[0].Subscribe(">", func(m *nats.Msg) {
		if !counting.Load() {
			return
		}
		count.Add(1)
		size.Add(int64(len(m.Data) + len(m.Subject) + len(m.Reply)))
		last.Store(time.Now().UnixNano())
		smu.Lock()
		seen[shape(m.Subject)]++
		smu.Unlock()
	})
	if err != nil {
		return 0, 0, err
	}
	defer wsub.Unsubscribe()
	_ = wsub.SetPendingLimits(-1, -1)
	if err := wconn[0].Flush(); err != nil {
		return 0, 0, err
	}
	lease := first.Lease.ID
	for range dReleases {
		counting.Store(true)
		var rr messages.ReleaseReply
		if err := rawCall(e.conns[1], subjects.Verb(messages.VerbRelease, name), &messages.ReleaseRequest{LeaseID: lease}, &rr); err != nil {
			return 0, 0, err
		}
		if rr.Error != nil || !rr.Released {
			return 0, 0, fmt.Errorf("release: %+v", rr)
		}
		select {
		case lease = <-grants:
		case <-time.After(10 * time.Second):
			return 0, 0, fmt.Errorf("no grant within 10s of a release")
		}
		// Wait until the wire has been quiet for 100 ms.
		for time.Since(time.Unix(0, last.Load())) < 100*time.Millisecond {
			time.Sleep(10 * time.Millisecond)
		}
		counting.Store(false)
	}
	smu.Lock()
	var kinds []string
	for k, v := range seen {
		kinds = append(kinds, fmt.Sprintf("%s×%.1f", k, float64(v)/dReleases))
	}
	smu.Unlock()
	sort.Strings(kinds)
	logf("  %d waiters, per release: %s", n, strings.Join(kinds, " "))
	// Leave the limit empty of our waiters: delete it.
	if _, err := cs[0].DeleteLimit(ctx, name); err != nil {
		logf("  delete %s: %v", name, err)
	}
	return float64(count.Load()) / dReleases, float64(size.Load()) / dReleases, nil
}

// shape reduces a subject to its kind: inboxes and ids become "*", limit
// names are dropped after the verb.
func shape(subj string) string {
	t := strings.Split(subj, ".")
	switch {
	case t[0] == "_INBOX":
		return "_INBOX.*"
	case t[0] == "$KV" && len(t) > 2:
		k := strings.Join(t[2:], ".")
		if i := strings.IndexAny(k, ".:/_-"); i > 0 {
			k = k[:i]
		}
		return "$KV." + t[1] + "." + k + "…"
	case t[0] == "slotbench":
		return "grant-notify"
	case len(t) >= 4:
		return strings.Join(append(append(t[:3:3], "<name>"), t[4:]...), ".")
	}
	return subj
}
