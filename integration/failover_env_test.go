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
	t       testing.TB
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
func newFailoverEnv(t testing.TB, n int, brokerURL func(c *cluster, i int) string) *failoverEnv {
	t.Helper()
	return newFailoverEnvBin(t, daemonBuild(t), n, brokerURL)
}

// newFailoverEnvBin is newFailoverEnv with the slotbroker binary bin, built
// already (daemonBuild): for runs that start several environments.
func newFailoverEnvBin(t testing.TB, bin string, n int, brokerURL func(c *cluster, i int) string) *failoverEnv {
	t.Helper()
	fe := &failoverEnv{t: t, c: startCluster(t, 3), bin: bin}
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

// waitRoles waits until a live broker leads and standbys live ones stand
// by (their status written in the last 3 s, by a running process: a stopped
// broker's last status does not count). It returns the leader's index.
func (fe *failoverEnv) waitRoles(standbys int) int {
	fe.t.Helper()
	leader := -1
	eventually(fe.t, clusterBound, fmt.Sprintf("a leader and %d standbys", standbys), func() bool {
		live := map[int]bool{}
		for _, p := range fe.brokers {
			if p.exited() {
				fe.t.Fatalf("a broker exited with status %d:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
			}
			live[p.cmd.Process.Pid] = true
		}
		leader = fe.leaderIndex()
		if leader < 0 {
			return false
		}
		_, sts, _ := fe.statuses()
		n := 0
		for _, st := range sts {
			if st.Role == messages.RoleStandby && live[st.PID] && time.Since(st.At) < 3*time.Second {
				n++
			}
		}
		return n >= standbys
	})
	return leader
}

// client is a client on a new connection to node i only.
func (fe *failoverEnv) client(i int) *client.Client {
	fe.t.Helper()
	c, err := client.New(fe.c.Conn(fe.t, i))
	if err != nil {
		fe.t.Fatal(err)
	}
	fe.t.Cleanup(func() { _ = c.Close() })
	return c
}

// cycler runs clients that acquire and release a slot of their limit in a
// loop, recording every acquisition in a history, and notes, for the round
// marked last (markRound), when each client's first Acquire sent after the
// mark got its lease.
type cycler struct {
	h        history
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	cycles   []atomic.Int64
	lost     atomic.Int64

	mu    sync.Mutex
	errs  []error
	mark  time.Time   // the current round's start; zero before the first
	first []time.Time // per client: its first lease of an Acquire sent at or after mark; zero if none yet
}

// startCycler starts clients cycling over limits limits of size slots each,
// created first. Clients share conns connections to every node. Their
// requests fail once runFor has passed.
func (fe *failoverEnv) startCycler(clients, limits, size, conns int, runFor time.Duration) *cycler {
	fe.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runFor)
	fe.t.Cleanup(cancel)
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
	fe.t.Cleanup(func() { _ = admin.Close() })
	for l := range limits {
		if _, err := admin.CreateLimit(ctx, "L"+strconv.Itoa(l), size); err != nil {
			fe.t.Fatal(err)
		}
	}
	cy := &cycler{stop: make(chan struct{}), cycles: make([]atomic.Int64, clients), first: make([]time.Time, clients)}
	for i := range clients {
		c, err := client.New(ncs[i%conns])
		if err != nil {
			fe.t.Fatal(err)
		}
		fe.t.Cleanup(func() { _ = c.Close() })
		cy.wg.Add(1)
		go cy.run(ctx, c, i, "L"+strconv.Itoa(i%limits), size)
	}
	// Runs before the clients are closed: on a failed run (finish not
	// reached), stop the clients and cancel what still waits for a broker.
	fe.t.Cleanup(func() {
		cy.stopOnce.Do(func() { close(cy.stop) })
		cancel()
		cy.wg.Wait()
	})
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
		cy.served(i, op.a.sent)
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

// served notes that client i, whose Acquire was sent at sent, holds its
// lease now.
func (cy *cycler) served(i int, sent time.Time) {
	held := time.Now()
	cy.mu.Lock()
	defer cy.mu.Unlock()
	if !cy.mark.IsZero() && !sent.Before(cy.mark) && cy.first[i].IsZero() {
		cy.first[i] = held
	}
}

// markRound starts a round now and returns its start.
func (cy *cycler) markRound() time.Time {
	cy.mu.Lock()
	defer cy.mu.Unlock()
	cy.mark = time.Now()
	clear(cy.first)
	return cy.mark
}

// servedAfter is, for the round marked at t0, how long after t0 the first
// and the last client got a lease for an Acquire sent after t0, once every
// client has (ok).
func (cy *cycler) servedAfter(t0 time.Time) (first, last time.Duration, ok bool) {
	cy.mu.Lock()
	defer cy.mu.Unlock()
	if !cy.mark.Equal(t0) {
		return 0, 0, false
	}
	first = -1
	for _, at := range cy.first {
		if at.IsZero() {
			return 0, 0, false
		}
		d := at.Sub(t0)
		if first < 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	return first, last, true
}

func (cy *cycler) fail(err error) {
	cy.mu.Lock()
	cy.errs = append(cy.errs, err)
	cy.mu.Unlock()
}

// failed reports whether a client has failed (and stopped).
func (cy *cycler) failed() bool {
	cy.mu.Lock()
	defer cy.mu.Unlock()
	return len(cy.errs) > 0
}

// check stops t at once if a client has failed (finish reports them all).
func (cy *cycler) check(t testing.TB) {
	t.Helper()
	cy.mu.Lock()
	defer cy.mu.Unlock()
	if len(cy.errs) > 0 {
		t.Fatalf("%d clients failed, the first: %v", len(cy.errs), cy.errs[0])
	}
}

// total is the number of cycles done by all the clients.
func (cy *cycler) total() int64 {
	var n int64
	for i := range cy.cycles {
		n += cy.cycles[i].Load()
	}
	return n
}

// waitEach waits until every client has done n more cycles than now, or
// one has failed.
func (cy *cycler) waitEach(t testing.TB, within time.Duration, n int64) {
	t.Helper()
	base := make([]int64, len(cy.cycles))
	for i := range cy.cycles {
		base[i] = cy.cycles[i].Load()
	}
	eventually(t, within, fmt.Sprintf("every client doing %d more cycles", n), func() bool {
		if cy.failed() {
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
func (cy *cycler) finish(t testing.TB) {
	t.Helper()
	cy.stopOnce.Do(func() { close(cy.stop) })
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
func (cy *cycler) checkTokensRise(t testing.TB, t0 time.Time) {
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
