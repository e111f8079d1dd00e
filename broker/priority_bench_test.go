package broker

import (
	"strconv"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// wakeCase is a queue shape for BenchmarkWakeCostWithPriorities.
type wakeCase struct {
	waiters, priorities int
	// step is how far the fake clock moves per release; aging is the
	// state's aging interval; clock names the pair.
	step, aging time.Duration
	clock       string
	// viaAcquire: the new waiter queues through an acquisition.
	viaAcquire bool
}

// BenchmarkWakeCostWithPriorities keeps a limit of one slot held with a
// queue of W waiters spread evenly over P priorities (P=1: FIFO). Each
// iteration releases the held lease, which grants the queue's head, whose
// acquisition accepts it and is held next; then a new waiter of the next
// priority in turn joins the tail, so the queue stays at W. ns/wake is the
// release, the grant and the acceptance; ns/queue the joining at the tail.
// With tail=enqueue the new waiter is put in the queue directly (a few map
// and list insertions, no reply), so ns/op is the wake's cost; with
// tail=acquire it queues through an acquisition, whose queued reply
// computes its position and wait estimate. With clock=still the fake clock
// does not move (no aging); with clock=1ms-per-wake it moves 1 ms per
// release and waiters age one priority per 10 ms, so every waiter that
// waited 90 ms ranks at the top.
func BenchmarkWakeCostWithPriorities(b *testing.B) {
	var cases []wakeCase
	for _, clock := range []wakeCase{
		{clock: "still", aging: DefaultPriorityAging},
		{clock: "1ms-per-wake,aging=10ms", step: time.Millisecond, aging: 10 * time.Millisecond},
	} {
		for _, w := range []int{100, 1_000, 10_000} {
			for _, p := range []int{1, messages.MaxPriority + 1} {
				for _, viaAcquire := range []bool{false, true} {
					c := clock
					c.waiters, c.priorities, c.viaAcquire = w, p, viaAcquire
					cases = append(cases, c)
				}
			}
		}
	}
	for _, c := range cases {
		tail := "enqueue"
		if c.viaAcquire {
			tail = "acquire"
		}
		name := "waiters=" + strconv.Itoa(c.waiters) + "/priorities=" + strconv.Itoa(c.priorities) + "/clock=" + c.clock + "/tail=" + tail
		b.Run(name, func(b *testing.B) { benchWake(b, c) })
	}
}

func benchWake(b *testing.B, c wakeCase) {
	st, now := benchState()
	st.aging = c.aging
	benchCreate(b, st, now, "db", messages.CreateRequest{Limit: 1})
	held := tryHold(b, st, now, "db").id
	next := 0
	// enqueueOne queues a waiter as state.queue does, without the reply.
	enqueueOne := func() {
		p := next % c.priorities
		next++
		names := []string{"db"}
		w := &waiter{id: st.newID(), names: names, occupy: 1, ttl: st.ttl.def, since: now, notify: "_INBOX.bench.w",
			enc: messages.Msgpack, scope: names, quota: "_INBOX.bench", priority: p}
		st.nextOrder++
		w.order = st.nextOrder
		st.enqueue(w)
	}
	acquireOne := func() {
		p := next % c.priorities
		next++
		fx := &effects{}
		r := st.acquire(now, "db", &messages.AcquireRequest{Occupy: 1, Notify: "_INBOX.bench.w", Priority: p}, messages.Msgpack, fx)
		if r.reply.Status != messages.StatusQueued {
			b.Fatalf("waiter %d not queued: %+v", next, r.reply)
		}
		settleWakes(st, now, fx)
	}
	wake := func() {
		now = now.Add(c.step)
		fx := &effects{}
		st.release(now, held, fx)
		if len(fx.grants) != 1 {
			b.Fatalf("release granted %d, want 1", len(fx.grants))
		}
		g := fx.grants[0]
		settleWakes(st, now, fx)
		fx = &effects{}
		st.accept(now, g.w.id, fx)
		settleWakes(st, now, fx)
		held = g.lease.id
	}
	queueOne := enqueueOne
	if c.viaAcquire {
		queueOne = acquireOne
	}
	for range c.waiters {
		enqueueOne()
	}
	// One whole turn of the queue first, so that the measured waiters
	// have queued one by one, aged as they do in the steady state.
	for range c.waiters {
		wake()
		enqueueOne()
	}
	var wakeNs, queueNs time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		wake()
		t1 := time.Now()
		queueOne()
		queueNs += time.Since(t1)
		wakeNs += t1.Sub(t0)
	}
	if n := st.limits["db"].queue.Len(); n != c.waiters {
		b.Fatalf("%d waiters at the end, want %d", n, c.waiters)
	}
	b.ReportMetric(float64(wakeNs.Nanoseconds())/float64(b.N), "ns/wake")
	b.ReportMetric(float64(queueNs.Nanoseconds())/float64(b.N), "ns/queue")
}
