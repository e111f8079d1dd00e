package broker

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/slotbroker/slotbroker/messages"
)

// TestNoGrantableWaiterIsLeftWaitingByTheTimers: the broker looks at a
// queue again only after a change on its limits or when the timer that
// wakeAt asks for fires (decay, priority aging, a key's drain). So once the
// timers due have fired, no waiter may head all of its queues with its
// slots free on all of them: it would wait for an unrelated event that may
// never come (PROTOCOL.md §7.2, §7.5). This drives random acquisitions of
// one or two limits, rate and not, with priorities, releases and cancels,
// and moves a fake clock by firing the timers as the Broker does
// (setWaker/onWake).
func TestNoGrantableWaiterIsLeftWaitingByTheTimers(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := 0
		st := newState(ttlBounds{def: 100 * time.Second, min: time.Second, max: time.Hour}, func() string {
			n++
			return fmt.Sprintf("id%d", n)
		})
		st.aging = time.Second
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		timers := map[string]time.Time{}
		names := []string{"a", "b", "c"}
		apply := func(fx *effects) {
			// Grants are accepted at once, as a live client does.
			for len(fx.grants) > 0 {
				g := fx.grants[0]
				fx.grants = fx.grants[1:]
				st.accept(now, g.w.id, fx)
			}
			for _, name := range dedupe(fx.wake) {
				if at := st.wakeAt(now, name); at.IsZero() {
					delete(timers, name)
				} else {
					timers[name] = at
				}
			}
		}
		step := func(fn func(fx *effects)) {
			fx := &effects{}
			fn(fx)
			apply(fx)
		}
		fire := func(until time.Time) {
			for i := 0; i < 10000; i++ {
				first, at := "", time.Time{}
				for name, t := range timers {
					if !t.After(until) && (first == "" || t.Before(at) || (t.Equal(at) && name < first)) {
						first, at = name, t
					}
				}
				if first == "" {
					break
				}
				if at.After(now) {
					now = at
				}
				delete(timers, first)
				step(func(fx *effects) {
					st.dispatch(now, fx, first)
					fx.wake = append(fx.wake, first)
				})
			}
			now = until
		}
		for _, name := range names {
			decay := rapid.SampledFrom([]float64{0, 0, 1, 0.5}).Draw(rt, "decay_"+name)
			limit := rapid.IntRange(1, 3).Draw(rt, "limit_"+name)
			step(func(fx *effects) {
				st.create(now, name, &messages.CreateRequest{Limit: limit, SlotDecayPerSecond: decay}, fx)
			})
		}
		steps := rapid.IntRange(1, 80).Draw(rt, "steps")
		for i := range steps {
			switch rapid.IntRange(0, 5).Draw(rt, "op") {
			case 0, 1, 2:
				name := rapid.SampledFrom(names).Draw(rt, "name")
				others := rapid.SliceOfNDistinct(rapid.SampledFrom(names), 0, 1, rapid.ID[string]).Draw(rt, "others")
				rate := rapid.Bool().Draw(rt, "rate")
				for _, o := range append([]string{name}, others...) {
					if st.limits[o].cfg.SlotDecayPerSecond <= 0 {
						rate = false
					}
				}
				id := fmt.Sprintf("w%d", i)
				req := &messages.AcquireRequest{Names: others, Occupy: rapid.IntRange(1, 2).Draw(rt, "occupy"), Rate: rate,
					Priority: rapid.IntRange(0, 9).Draw(rt, "priority"), WaitID: id, Notify: "_INBOX.c." + id}
				step(func(fx *effects) { st.acquire(now, name, req, messages.Msgpack, fx) })
			case 3:
				ids := make([]string, 0, len(st.leases))
				for id := range st.leases {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				if len(ids) > 0 {
					id := rapid.SampledFrom(ids).Draw(rt, "lease")
					step(func(fx *effects) { st.release(now, id, fx) })
				}
			case 4:
				ids := make([]string, 0, len(st.waiters))
				for id := range st.waiters {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				if len(ids) > 0 {
					id := rapid.SampledFrom(ids).Draw(rt, "wait")
					step(func(fx *effects) { st.cancel(now, id, fx) })
				}
			case 5:
				fire(now.Add(time.Duration(rapid.IntRange(0, 4000).Draw(rt, "ms")) * time.Millisecond))
			}
			fire(now)
			for _, name := range names {
				ls := st.limits[name]
				if h := ls.queue.head(now, st.aging); h != nil && st.canGrant(now, h) {
					rt.Fatalf("at step %d, %s heads %v and fits on all of them, but no timer is due to grant it (timers %v, now %v)",
						i, h.id, h.names, timers, now)
				}
			}
		}
	})
}
