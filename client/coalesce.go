package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/slotbroker/slotbroker/messages"
)

// TryRateLimit calls with the same arguments that arrive while one of them
// is at the broker wait, and go together as one counted request when it
// returns (AcquireRequest.Count, PROTOCOL.md §5.1): under load a Client sends
// one request per batch instead of one per call. The broker admits as many
// as fit, in order; each caller gets its own answer. An idle Client sends a
// call at once, so coalescing adds no latency when there is no load.

// tryKey is what calls must share to go in one counted request.
type tryKey struct {
	name     string // the limit reference: with WithKey, "<name>.<key>"
	occupy   int
	names    string
	strict   bool
	holder   string
	priority int
}

// tryCall is one waiting caller; done gets its answer.
type tryCall struct {
	ctx  context.Context
	done chan error
}

// tryQueue is the calls of one key: busy while a request of theirs is out.
type tryQueue = callQueue[*tryCall]

// callQueue is the calls of one key: busy while a request of theirs is out,
// the others waiting in arrival order. Its batcher's lock guards it.
type callQueue[C comparable] struct {
	busy    bool
	waiting []C
}

// take takes the waiting calls; with none, the queue goes idle.
func (q *callQueue[C]) take() []C {
	batch := q.waiting
	q.waiting = nil
	if len(batch) == 0 {
		q.busy = false
	}
	return batch
}

// remove takes call out of the waiting calls, and tells whether it was there.
func (q *callQueue[C]) remove(call C) bool {
	for i, w := range q.waiting {
		if w == call {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// tryBatcher holds the queues of a Client.
type tryBatcher struct {
	mu sync.Mutex
	qs map[tryKey]*tryQueue
}

// queueFor returns the queue of key in qs, making both as needed.
func queueFor[Q any](qs *map[tryKey]*Q, key tryKey) *Q {
	if *qs == nil {
		*qs = map[tryKey]*Q{}
	}
	q := (*qs)[key]
	if q == nil {
		q = new(Q)
		(*qs)[key] = q
	}
	return q
}

// tryRate runs one TryRateLimit call, alone or in a batch.
func (c *Client) tryRate(ctx context.Context, name string, occupy int, opts []AcquireOption) error {
	o := collect(opts)
	// Calls go together by limit reference (name, or name and key); each
	// request of a call is sent with its name and options again.
	ref, err := validate(name, occupy, o)
	if err != nil {
		return err
	}
	key := keyOf(ref, occupy, o)
	b := &c.tries
	b.mu.Lock()
	q := queueFor(&b.qs, key)
	if !q.busy {
		q.busy = true
		b.mu.Unlock()
		err := c.rate(ctx, name, occupy, true, opts)
		c.nextBatch(key, q, o)
		return err
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	call := &tryCall{ctx: ctx, done: make(chan error, 1)}
	q.waiting = append(q.waiting, call)
	b.mu.Unlock()

	select {
	case err := <-call.done:
		return err
	case <-ctx.Done():
		b.mu.Lock()
		q.remove(call)
		b.mu.Unlock()
		// Already sent in a batch: like a request in flight, its admission
		// may still count.
		return ctxError(ctx)
	}
}

// nextBatch takes the calls that waited for q's request and sends them on a
// goroutine of their own, or marks q idle when none did.
func (c *Client) nextBatch(key tryKey, q *tryQueue, o acquireOptions) {
	b := &c.tries
	b.mu.Lock()
	batch := q.take()
	if len(batch) == 0 {
		delete(b.qs, key)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	// Each caller's context and WithTimeout bound its own wait, not the batch's.
	o.timeout = 0
	go func() {
		c.sendBatch(key, batch, o)
		c.nextBatch(key, q, o)
	}()
}

// sendBatch asks for one admission per call (at most MaxCount per request)
// and answers every call: admissions go to the callers still waiting, in
// order; the others get ErrNoSlots.
func (c *Client) sendBatch(key tryKey, batch []*tryCall, o acquireOptions) {
	for len(batch) > 0 {
		part := batch[:min(len(batch), messages.MaxCount)]
		batch = batch[len(part):]
		ctxs := make([]context.Context, len(part))
		for i, call := range part {
			ctxs[i] = call.ctx
		}
		admitted, err := c.countedTry(key, ctxs, o, true)
		given := 0
		for _, call := range part {
			switch {
			case err != nil:
				call.done <- err
			case call.ctx.Err() == nil && given < admitted:
				given++
				call.done <- nil
			default:
				call.done <- fromWire(messages.Errorf(messages.CodeNoSlots,
					"limit %q admitted %d of %d calls sent together; this one was not", key.name, admitted, len(part)))
			}
		}
	}
}

// countedTry sends one counted request for the callers whose contexts are
// ctxs. It is given up (and takes no slots after) once every one of them
// has stopped waiting.
// With retry (TryRateLimit), it is re-sent (same wait id) while no broker
// answers, within the Client's retry window; without (RateLimit, whose
// callers then queue), it is sent once, as a probe whose refusal is not
// counted in denied_slots.
func (c *Client) countedTry(key tryKey, ctxs []context.Context, o acquireOptions, retry bool) (int, error) {
	ctx, cancel := context.WithCancel(c.life)
	defer cancel()
	var waiting atomic.Int64
	waiting.Store(int64(len(ctxs)))
	for _, cctx := range ctxs {
		stop := context.AfterFunc(cctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	req := &messages.AcquireRequest{Occupy: key.occupy, Holder: key.holder, Strict: key.strict,
		Try: true, Rate: true, Probe: !retry, Priority: key.priority}
	if len(ctxs) > 1 {
		req.Count = len(ctxs)
	}
	_, reply, err := c.sendAcquire(ctx, key.name, req, o, retry)
	if err != nil {
		if c.life.Err() != nil {
			return 0, fmt.Errorf("%w: the client or its NATS connection was closed while calls to %q waited", ErrClosed, key.name)
		}
		return 0, err
	}
	c.warnUnenforced(key.name, reply)
	return max(reply.Admitted, 1), nil
}
