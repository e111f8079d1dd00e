package integration

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestKilledLeaderKeepsKeysAndPriorities: a key's held lease and the
// waiters queued on that key at different priorities survive the leader's
// SIGKILL on a 3-node cluster: the standby that takes over enforces the
// key's limit (another acquisition of it is refused, another key is not),
// and when the lease is released it grants the waiters by priority, with
// fencing tokens above the killed leader's.
func TestKilledLeaderKeepsKeysAndPriorities(t *testing.T) {
	fe := newFailoverEnv(t, 2, nil)
	ctx := ctxT(t, 2*time.Minute)
	c := fe.client(0)
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	held, err := c.Acquire(ctx, "tenant", 1, client.WithKey("acme"), client.WithLeaseTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	type granted struct {
		p     int
		lease *client.Lease
		err   error
	}
	grants := make(chan granted, 2)
	for _, p := range []int{2, 7} { // the lower priority queues first
		queued := make(chan struct{})
		go func() {
			l, err := c.Acquire(ctx, "tenant", 1, client.WithKey("acme"), client.WithPriority(p),
				client.WithQueued(func(client.Queued) { close(queued) }))
			grants <- granted{p, l, err}
		}()
		select {
		case <-queued:
		case <-ctx.Done():
			t.Fatalf("priority %d was not queued", p)
		}
	}
	leader := fe.leaderIndex()
	if leader < 0 {
		t.Fatal("no leader")
	}
	if err := fe.brokers[leader].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, clusterBound, "the standby leading", func() bool {
		i := fe.leaderIndex()
		return i >= 0 && i != leader
	})
	if _, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("acme")); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("try on acme after the failover: %v, want ErrNoSlots (its lease and waiters are still there)", err)
	}
	other, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("globex"))
	if err != nil {
		t.Fatalf("try on globex after the failover: %v", err)
	}
	defer func() { _ = other.Release(ctx) }()
	if err := held.Release(ctx); err != nil {
		t.Fatalf("release after the failover: %v", err)
	}
	last := held.Token()
	for _, want := range []int{7, 2} {
		select {
		case g := <-grants:
			if g.err != nil {
				t.Fatalf("priority %d: %v", g.p, g.err)
			}
			if g.p != want || g.lease.Token() <= last {
				t.Fatalf("granted priority %d token %d after token %d; want priority %d with a higher token", g.p, g.lease.Token(), last, want)
			}
			last = g.lease.Token()
			if err := g.lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("priority %d was not granted after the failover", want)
		}
	}
}
