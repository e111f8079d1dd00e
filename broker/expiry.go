package broker

import (
	"container/heap"
	"time"
)

// expiries orders the live leases by deadline, so that one timer, set for the
// earliest, drives every expiry at the lease's own deadline (no sweep, and no
// timer per lease).
type expiries struct {
	h     leaseHeap
	timer *time.Timer
	at    time.Time // when timer fires; zero when stopped
}

// arm puts l in the order, or moves it after its deadline changed.
func (x *expiries) arm(l *lease) {
	if l.slot > 0 {
		heap.Fix(&x.h, l.slot-1)
		return
	}
	heap.Push(&x.h, l)
}

// disarm takes l out of the order.
func (x *expiries) disarm(l *lease) {
	if l.slot > 0 {
		heap.Remove(&x.h, l.slot-1)
	}
}

// popDue takes out and returns the first lease whose deadline is at or before now.
func (x *expiries) popDue(now time.Time) *lease {
	if len(x.h) == 0 || x.h[0].expires.After(now) {
		return nil
	}
	return heap.Pop(&x.h).(*lease)
}

// schedule sets the timer for the earliest deadline; fire runs then.
func (x *expiries) schedule(now time.Time, fire func()) {
	if len(x.h) == 0 {
		x.stop()
		return
	}
	next := x.h[0].expires
	if next.Equal(x.at) {
		return
	}
	x.at = next
	if x.timer == nil {
		x.timer = time.AfterFunc(next.Sub(now), fire)
		return
	}
	x.timer.Reset(next.Sub(now))
}

func (x *expiries) stop() {
	if x.timer != nil {
		x.timer.Stop()
	}
	x.at = time.Time{}
}

// leaseHeap is a min-heap of leases by deadline; lease.slot is index+1.
type leaseHeap []*lease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].slot, h[j].slot = i+1, j+1
}
func (h *leaseHeap) Push(v any) {
	l := v.(*lease)
	*h = append(*h, l)
	l.slot = len(*h)
}
func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.slot = 0
	return l
}
