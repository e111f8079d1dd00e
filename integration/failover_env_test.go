package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// failoverEnv is a 3-node NATS cluster with slotbroker daemons on it (each a
// process of its own, with the journal and bucket on R3), for the failover
// tests.
type failoverEnv struct {
	t       *testing.T
	c       *cluster
	bin     string
	brokers []*daemonProc
	args    [][]string
	nc      *nats.Conn
	kv      jetstream.KeyValue
}

// newFailoverEnv starts the cluster and n brokers; brokerURL gives the NATS
// URL each broker connects to (nil: every node's). It returns once one
// broker leads and the others stand by.
func newFailoverEnv(t *testing.T, n int, brokerURL func(c *cluster, i int) string) *failoverEnv {
	t.Helper()
	fe := &failoverEnv{t: t, c: startCluster(t, 3), bin: daemonBuild(t)}
	for i := range n {
		url := fe.c.URLs()
		if brokerURL != nil {
			url = brokerURL(fe.c, i)
		}
		fe.args = append(fe.args, []string{"--nats", url, "--replicas", "3", "--log-level", "info"})
		fe.brokers = append(fe.brokers, daemonStart(t, fe.bin, daemonEnv(), fe.args[i]...))
	}
	// The brokers' logs go to the test log when it fails, or always with
	// SLOTBROKER_FAILOVER_LOGS=1.
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("SLOTBROKER_FAILOVER_LOGS") == "" {
			return
		}
		for i, p := range fe.brokers {
			t.Logf("broker %d (pid %d):\n%s", i, p.cmd.Process.Pid, p.stderr)
		}
	})
	nc, err := nats.Connect(fe.c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	fe.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, clusterBound, "the brokers' bucket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		fe.kv, err = js.KeyValue(ctx, messages.DefaultBucket)
		return err == nil
	})
	fe.waitRoles(n - 1)
	return fe
}

// restartBroker starts broker i again with its arguments.
func (fe *failoverEnv) restartBroker(i int) {
	fe.brokers[i] = daemonStart(fe.t, fe.bin, daemonEnv(), fe.args[i]...)
}

// statuses reads the leader record and the brokers' status keys.
func (fe *failoverEnv) statuses() (messages.LeaderRecord, map[string]messages.BrokerStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var rec messages.LeaderRecord
	e, err := fe.kv.Get(ctx, messages.LeaderKey)
	if err != nil {
		return rec, nil, err
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, nil, err
	}
	lister, err := fe.kv.ListKeysFiltered(ctx, messages.BrokerKeyPrefix+"*")
	if err != nil {
		return rec, nil, err
	}
	out := map[string]messages.BrokerStatus{}
	for k := range lister.Keys() {
		e, err := fe.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var st messages.BrokerStatus
		if json.Unmarshal(e.Value(), &st) == nil {
			out[st.ID] = st
		}
	}
	return rec, out, nil
}

// leaderIndex is the index of the broker process that leads, or -1.
func (fe *failoverEnv) leaderIndex() int {
	rec, sts, err := fe.statuses()
	if err != nil || rec.Released {
		return -1
	}
	st, ok := sts[rec.ID]
	if !ok || st.Role != messages.RoleLeader {
		return -1
	}
	for i, p := range fe.brokers {
		if !p.exited() && p.cmd.Process.Pid == st.PID {
			return i
		}
	}
	return -1
}

// waitRoles waits until a live broker leads and standbys live ones stand by.
func (fe *failoverEnv) waitRoles(standbys int) int {
	fe.t.Helper()
	leader := -1
	eventually(fe.t, clusterBound, fmt.Sprintf("a leader and %d standbys", standbys), func() bool {
		for _, p := range fe.brokers {
			if p.exited() {
				fe.t.Fatalf("a broker exited with status %d:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
			}
		}
		leader = fe.leaderIndex()
		if leader < 0 {
			return false
		}
		_, sts, _ := fe.statuses()
		n := 0
		for _, st := range sts {
			if st.Role == messages.RoleStandby && time.Since(st.At) < 3*time.Second {
				n++
			}
		}
		return n >= standbys
	})
	return leader
}

// cycler runs clients that acquire and release a slot of their limit in a
// loop, recording every acquisition in a history.
type cycler struct {
	h      history
	stop   chan struct{}
	wg     sync.WaitGroup
	cycles []atomic.Int64
	mu     sync.Mutex
	errs   []error
	lost   atomic.Int64
}

// startCycler starts clients cycling over limits limits of size slots each,
// created first. Clients share conns connections to every node.
func (fe *failoverEnv) startCycler(clients, limits, size, conns int) *cycler {
	fe.t.Helper()
	ctx := ctxT(fe.t, 2*time.Minute)
	var ncs []*nats.Conn
	for range conns {
		nc, err := nats.Connect(fe.c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			fe.t.Fatal(err)
		}
		fe.t.Cleanup(nc.Close)
		ncs = append(ncs, nc)
	}
	admin, err := client.New(ncs[0])
	if err != nil {
		fe.t.Fatal(err)
	}
	for l := range limits {
		if _, err := admin.CreateLimit(ctx, "L"+strconv.Itoa(l), size); err != nil {
			fe.t.Fatal(err)
		}
	}
	cy := &cycler{stop: make(chan struct{}), cycles: make([]atomic.Int64, clients)}
	for i := range clients {
		c, err := client.New(ncs[i%conns])
		if err != nil {
			fe.t.Fatal(err)
		}
		fe.t.Cleanup(func() { _ = c.Close() })
		cy.wg.Add(1)
		go cy.run(ctx, c, i, "L"+strconv.Itoa(i%limits), size)
	}
	return cy
}

func (cy *cycler) run(ctx context.Context, c *client.Client, i int, limit string, size int) {
	defer cy.wg.Done()
	id := "c" + strconv.Itoa(i)
	for {
		select {
		case <-cy.stop:
			return
		default:
		}
		op := cy.h.begin(limit, size, 1, id)
		l, err := c.Acquire(ctx, limit, 1, client.WithLeaseTTL(5*time.Second), client.WithQueued(op.onQueued), client.WithHolder(id))
		if err != nil {
			cy.fail(fmt.Errorf("%s: acquire %s: %w", id, limit, err))
			return
		}
		op.granted(l.Token(), l.ID())
		time.Sleep(time.Millisecond) // the work done under the lease
		if l.Err() != nil {
			op.lose()
			cy.lost.Add(1)
		} else {
			op.releasing()
		}
		if err := l.Release(ctx); err != nil && !errors.Is(err, client.ErrLeaseLost) {
			cy.fail(fmt.Errorf("%s: release %s: %w", id, limit, err))
			return
		}
		cy.cycles[i].Add(1)
	}
}

func (cy *cycler) fail(err error) {
	cy.mu.Lock()
	cy.errs = append(cy.errs, err)
	cy.mu.Unlock()
}

// waitEach waits until every client has done n more cycles than in base.
func (cy *cycler) waitEach(t *testing.T, within time.Duration, n int64) {
	t.Helper()
	base := make([]int64, len(cy.cycles))
	for i := range cy.cycles {
		base[i] = cy.cycles[i].Load()
	}
	eventually(t, within, fmt.Sprintf("every client doing %d more cycles", n), func() bool {
		cy.mu.Lock()
		failed := len(cy.errs) > 0
		cy.mu.Unlock()
		if failed {
			return true
		}
		for i := range cy.cycles {
			if cy.cycles[i].Load() < base[i]+n {
				return false
			}
		}
		return true
	})
}

// firstOKAfter is how long after t0 the first Acquire sent after t0 got
// its lease: the time until requests are answered again.
func (cy *cycler) firstOKAfter(t0 time.Time) time.Duration {
	best := time.Duration(-1)
	for _, a := range cy.h.records() {
		if a.sent.Before(t0) || a.held.IsZero() {
			continue
		}
		if d := a.held.Sub(t0); best < 0 || d < best {
			best = d
		}
	}
	return best
}

// finish stops the clients and checks the run: every client finished
// without an error, no lease was lost, and the history holds.
func (cy *cycler) finish(t *testing.T) {
	t.Helper()
	close(cy.stop)
	cy.wg.Wait()
	for _, err := range cy.errs {
		t.Error(err)
	}
	if n := cy.lost.Load(); n > 0 {
		t.Errorf("%d leases were lost (their holders' renewals found them gone)", n)
	}
	cy.h.check(t)
}

// checkTokensRise checks that every lease granted to an acquisition sent
// after t0 (by the new leader) has a higher fencing token than every lease
// held before t0 (by the old one): tokens keep increasing across leaders.
func (cy *cycler) checkTokensRise(t *testing.T, t0 time.Time) {
	t.Helper()
	var before, after uint64
	for _, a := range cy.h.records() {
		switch {
		case a.held.IsZero():
		case a.held.Before(t0):
			before = max(before, a.token)
		case !a.sent.Before(t0) && (after == 0 || a.token < after):
			after = a.token
		}
	}
	if after <= before {
		t.Errorf("a lease granted after the failover has token %d, not above %d granted before it", after, before)
	}
}
