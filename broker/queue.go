package broker

import (
	"container/list"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// DefaultPriorityAging is how long a queued acquisition waits for its
// effective priority to rise by one (WithPriorityAging).
const DefaultPriorityAging = 10 * time.Second

// waitQueue is one limit's queued acquisitions: a FIFO lane per priority.
//
// The rule (PROTOCOL.md §7.5): a waiter's effective priority is its
// priority plus one per aging interval waited, at most messages.MaxPriority;
// the queue serves the highest effective priority first and, among equals,
// the earliest arrival (the global order). Within a lane the waiters are in
// arrival order, so the waited time falls along the lane and the lane's
// front has its highest effective priority: the queue's head is the best
// of at most MaxPriority+1 fronts, whatever the queue's length. And since
// every limit ranks waiters by the same key at a given time, the waiter
// that ranks first anywhere heads every queue it is in: an acquisition of
// several limits cannot deadlock another.
type waitQueue struct {
	// lanes are allocated by the first push: most limits (a live key of a
	// per-key limit, say) never queue anybody.
	lanes *[messages.MaxPriority + 1]list.List
	n     int
}

// Len is the number of waiters queued.
func (q *waitQueue) Len() int { return q.n }

// push appends w to its priority's lane.
func (q *waitQueue) push(w *waiter) *list.Element {
	if q.lanes == nil {
		q.lanes = new([messages.MaxPriority + 1]list.List)
	}
	q.n++
	return q.lanes[w.priority].PushBack(w)
}

// remove takes w's element e out of the queue.
func (q *waitQueue) remove(w *waiter, e *list.Element) {
	if e == nil || q.lanes == nil {
		return
	}
	if q.lanes[w.priority].Remove(e) != nil {
		q.n--
	}
}

// clear empties the queue.
func (q *waitQueue) clear() {
	q.lanes, q.n = nil, 0
}

// effective is w's effective priority at now.
func effective(w *waiter, now time.Time, aging time.Duration) int {
	p := w.priority
	if aging <= 0 || p >= messages.MaxPriority {
		return p
	}
	if waited := now.Sub(w.since); waited > 0 {
		steps := waited / aging
		if steps >= time.Duration(messages.MaxPriority-p) {
			return messages.MaxPriority
		}
		p += int(steps)
	}
	return p
}

// before tells whether a ranks before b at now.
func before(a, b *waiter, now time.Time, aging time.Duration) bool {
	ea, eb := effective(a, now, aging), effective(b, now, aging)
	if ea != eb {
		return ea > eb
	}
	return a.order < b.order
}

// head is the waiter served next at now, nil when none.
func (q *waitQueue) head(now time.Time, aging time.Duration) *waiter {
	if q.n == 0 {
		return nil
	}
	var best *waiter
	for i := len(q.lanes) - 1; i >= 0; i-- {
		f := q.lanes[i].Front()
		if f == nil {
			continue
		}
		if w := f.Value.(*waiter); best == nil || before(w, best, now, aging) {
			best = w
		}
	}
	return best
}

// each calls fn on every waiter, in no particular order, until fn returns
// false. fn must not change the queue.
func (q *waitQueue) each(fn func(*waiter) bool) {
	if q.lanes == nil {
		return
	}
	for i := range q.lanes {
		for e := q.lanes[i].Front(); e != nil; e = e.Next() {
			if !fn(e.Value.(*waiter)) {
				return
			}
		}
	}
}

// all is every waiter, in no particular order (a copy: callers may change
// the queue while going through it).
func (q *waitQueue) all() []*waiter {
	out := make([]*waiter, 0, q.n)
	q.each(func(w *waiter) bool { out = append(out, w); return true })
	return out
}

// inOrder calls fn on the waiters in the order the queue serves them at now
// (a merge of the lanes), until fn returns false. Its cost is the number of
// waiters visited times the number of lanes.
func (q *waitQueue) inOrder(now time.Time, aging time.Duration, fn func(*waiter) bool) {
	// Each lane's cursor with its waiter's effective priority, computed
	// once per step of that lane.
	if q.lanes == nil {
		return
	}
	var cur [messages.MaxPriority + 1]*list.Element
	var eff [messages.MaxPriority + 1]int
	for i := range q.lanes {
		if cur[i] = q.lanes[i].Front(); cur[i] != nil {
			eff[i] = effective(cur[i].Value.(*waiter), now, aging)
		}
	}
	for {
		best := -1
		for i := len(cur) - 1; i >= 0; i-- {
			if cur[i] == nil {
				continue
			}
			if best < 0 || eff[i] > eff[best] || (eff[i] == eff[best] && cur[i].Value.(*waiter).order < cur[best].Value.(*waiter).order) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := cur[best].Value.(*waiter)
		if cur[best] = cur[best].Next(); cur[best] != nil {
			eff[best] = effective(cur[best].Value.(*waiter), now, aging)
		}
		if !fn(w) {
			return
		}
	}
}

// position is w's 1-based place in the queue at now (0: not in it). Its
// cost grows with the position, not with the queue.
func (q *waitQueue) position(now time.Time, aging time.Duration, w *waiter) int {
	pos, found := 0, false
	q.inOrder(now, aging, func(o *waiter) bool {
		pos++
		found = o == w
		return !found
	})
	if !found {
		return 0
	}
	return pos
}

// tailPosition is the position of w, just pushed at now: every waiter of
// its priority or higher came earlier and ranks before it, and of the
// lower lanes only the fronts that aged up to its priority do. Its cost
// does not grow with the queue.
func (q *waitQueue) tailPosition(now time.Time, aging time.Duration, w *waiter) int {
	if q.lanes == nil {
		return 0
	}
	pos := 0
	for i := range q.lanes {
		if i >= w.priority {
			pos += q.lanes[i].Len()
			continue
		}
		if aging <= 0 {
			continue
		}
		// Lane i's waiters rank before w when they have waited
		// (w.priority-i) aging steps: a prefix of the lane.
		by := now.Add(-time.Duration(w.priority-i) * aging)
		for e := q.lanes[i].Front(); e != nil && !e.Value.(*waiter).since.After(by); e = e.Next() {
			pos++
		}
	}
	return pos
}

// nextAging is the earliest time after now at which a lane's front other
// than the head rises in effective priority (zero when none will): the head
// may change then without any release, so a blocked head is looked at
// again.
func (q *waitQueue) nextAging(now time.Time, aging time.Duration, head *waiter) time.Time {
	if aging <= 0 || q.lanes == nil {
		return time.Time{}
	}
	var at time.Time
	for i := range q.lanes {
		f := q.lanes[i].Front()
		if f == nil {
			continue
		}
		w := f.Value.(*waiter)
		if w == head || effective(w, now, aging) >= messages.MaxPriority {
			continue
		}
		steps := now.Sub(w.since)/aging + 1
		if now.Before(w.since) {
			steps = 1
		}
		t := w.since.Add(steps * aging)
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at
}
