package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// prGrant is the lease a queued waiter got, by the waiter's name.
type prGrant struct {
	who   string
	token uint64
	err   error
}

// prQueue queues an acquisition of name at priority p, named who, on a
// client of its own, and returns once the broker has queued it. When
// granted, the waiter reports its fencing token (tokens increase in grant
// order) and releases at once, so the next waiter is granted.
func prQueue(t *testing.T, ev *env, ctx context.Context, name, who string, p int, out chan<- prGrant) {
	t.Helper()
	c := ev.client()
	queued := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		l, err := c.Acquire(ctx, name, 1, client.WithPriority(p), client.WithHolder(who),
			client.WithQueued(func(client.Queued) { close(queued) }))
		if err != nil {
			failed <- err
			out <- prGrant{who: who, err: err}
			return
		}
		out <- prGrant{who: who, token: l.Token()}
		_ = l.Release(ctx)
	}()
	select {
	case <-queued:
	case err := <-failed:
		t.Fatalf("%s (priority %d) was not queued: %v", who, p, err)
	case <-ctx.Done():
		t.Fatalf("%s (priority %d) not queued before the test's deadline", who, p)
	}
}

// prOrder collects n grants and returns the waiters in grant order.
func prOrder(t *testing.T, ctx context.Context, n int, grants <-chan prGrant) []string {
	t.Helper()
	got := make([]prGrant, 0, n)
	for range n {
		select {
		case g := <-grants:
			if g.err != nil {
				t.Fatalf("%s: %v", g.who, g.err)
			}
			got = append(got, g)
		case <-ctx.Done():
			t.Fatalf("only %d of %d waiters granted: %+v", len(got), n, got)
		}
	}
	sort.Slice(got, func(i, j int) bool { return got[i].token < got[j].token })
	order := make([]string, n)
	for i, g := range got {
		order[i] = g.who
	}
	return order
}

// TestHigherPriorityWaitersAreGrantedFirst: with the slot held, waiters of
// priorities 0, 5 and 9 queued in mixed order are granted highest priority
// first and, within a priority, in their order of arrival. Aging is an hour
// here, so that no waiter's priority rises during the test.
func TestHigherPriorityWaitersAreGrantedFirst(t *testing.T) {
	ev := newEnv(t, broker.WithPriorityAging(time.Hour))
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holder, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	grants := make(chan prGrant, 6)
	queue := []struct {
		who string
		p   int
	}{{"p0-first", 0}, {"p5-first", 5}, {"p9-first", 9}, {"p0-second", 0}, {"p9-second", 9}, {"p5-second", 5}}
	for _, w := range queue {
		prQueue(t, ev, ctx, "db", w.who, w.p, grants)
	}
	info, err := c.GetLimit(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, w := range info.Waiters {
		listed = append(listed, fmt.Sprintf("%s:%d/%d", w.Holder, w.Priority, w.EffectivePriority))
	}
	if want := "[p9-first:9/9 p9-second:9/9 p5-first:5/5 p5-second:5/5 p0-first:0/0 p0-second:0/0]"; fmt.Sprint(listed) != want {
		t.Errorf("the queue as get lists it (holder:priority/effective): %v, want %s", listed, want)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got := prOrder(t, ctx, len(queue), grants)
	if want := "[p9-first p9-second p5-first p5-second p0-first p0-second]"; fmt.Sprint(got) != want {
		t.Errorf("grant order %v, want %s", got, want)
	}
}

// TestPriorityAgingServesAnOldLowPriorityWaiterFirst: with aging of 50 ms,
// a priority-0 waiter that has waited 9 aging steps has the effective
// priority 9, and is granted before priority-9 waiters that queued after
// it (ties go by arrival). The test waits for the broker to report the
// effective priority, not for a length of time.
func TestPriorityAgingServesAnOldLowPriorityWaiterFirst(t *testing.T) {
	ev := newEnv(t, broker.WithPriorityAging(50*time.Millisecond))
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holder, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	grants := make(chan prGrant, 3)
	prQueue(t, ev, ctx, "db", "old-p0", 0, grants)
	eventually(t, 30*time.Second, "old-p0's effective priority reaches 9", func() bool {
		info, err := c.GetLimit(ctx, "db")
		return err == nil && len(info.Waiters) == 1 && info.Waiters[0].EffectivePriority == 9
	})
	prQueue(t, ev, ctx, "db", "new-p9-a", 9, grants)
	prQueue(t, ev, ctx, "db", "new-p9-b", 9, grants)
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got := prOrder(t, ctx, 3, grants)
	if want := "[old-p0 new-p9-a new-p9-b]"; fmt.Sprint(got) != want {
		t.Errorf("grant order %v, want %s: the aged waiter first, then the others by arrival", got, want)
	}
}

// TestSlotctlRunPriority: slotctl run --priority 9 is granted before an
// earlier run --priority 0 (against a broker whose aging is an hour).
func TestSlotctlRunPriority(t *testing.T) {
	ev := newEnv(t, broker.WithPriorityAging(time.Hour))
	x := newCLIEnvOn(t, ev.e.URL)
	ctx := ctxT(t, 2*time.Minute)
	if _, err := x.c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	holder, err := x.c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "log")
	var runs []*cliRun
	for i, p := range []string{"0", "9"} {
		runs = append(runs, startCLIRun(t, x.command("run", "db", "--priority", p, "--", "sh", "-c", `echo "$1" >> "$0"`, log, "p"+p)))
		eventually(t, 30*time.Second, fmt.Sprintf("run --priority %s queued", p), func() bool {
			info, err := x.c.GetLimit(ctx, "db")
			return err == nil && info.WaitersTotal == i+1
		})
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		r.ok(t)
	}
	if got, _ := os.ReadFile(log); string(got) != "p9\np0\n" {
		t.Errorf("the runs ran in the order %q, want p9 then p0", got)
	}
}
