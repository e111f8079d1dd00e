package client

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/slotbroker/slotbroker/messages"
)

// RateLimit calls with the same arguments on one Client are coalesced too,
// without giving up the broker's FIFO order among them. While one call's
// request is at the broker, later calls wait in arrival order. When the
// limit had room (the last request was admitted at once), the waiting calls
// go together as one counted try, and the first ones still waiting are
// admitted as far as slots allow. Calls it does not admit, and all calls
// while the limit is contended (the last request had to queue), then send
// their own blocking request one after the other, each only once the one
// before it is answered (admitted or queued at the broker): a later call of
// the Client never reaches the broker's queue before an earlier one.
//
// The counted try is a probe (AcquireRequest.Probe): the calls it refuses
// go on to queue, so they are not counted in denied_slots.

// blockCall is one waiting RateLimit caller.
type blockCall struct {
	ctx context.Context
	// done answers a call admitted (or failed) by a counted try.
	done chan error
	// turn is closed when the call must send its own request now.
	turn chan struct{}
	// phase is closed by the caller once its own request is answered;
	// queued tells whether it queued at the broker.
	phase  chan struct{}
	queued bool
	err    error
	// left is closed by a caller who gave up after the loop took it.
	left chan struct{}
	gone bool // under the batcher's lock
}

// blockQueue is the RateLimit calls of one key: busy while one of its
// requests has not been answered.
type blockQueue struct {
	callQueue[*blockCall]
	// contended: the last request answered had to queue at the broker.
	contended bool
}

// blockBatcher holds the RateLimit queues of a Client.
type blockBatcher struct {
	mu sync.Mutex
	qs map[tryKey]*blockQueue
}

func keyOf(name string, occupy int, o acquireOptions) tryKey {
	return tryKey{name: name, occupy: occupy, names: strings.Join(limitNames(name, o.names), ","), strict: o.strict, holder: o.holder, priority: o.priority}
}

// blockRate runs one RateLimit call, alone or coalesced.
func (c *Client) blockRate(ctx context.Context, name string, occupy int, opts []AcquireOption) error {
	o := collect(opts)
	// As in tryRate: calls go together by reference, requests take name
	// and options again.
	ref, err := validate(name, occupy, o)
	if err != nil {
		return err
	}
	if o.timeout > 0 {
		// One deadline for the wait here and the request after it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
		opts = append(opts[:len(opts):len(opts)], func(o *acquireOptions) { o.timeout = 0 })
		o.timeout = 0
	}
	key := keyOf(ref, occupy, o)
	b := &c.blocks
	b.mu.Lock()
	q := queueFor(&b.qs, key)
	if c.onRateCall != nil {
		c.onRateCall()
	}
	if !q.busy {
		q.busy = true
		b.mu.Unlock()
		var once sync.Once
		answered := func(queued bool, err error) {
			once.Do(func() {
				b.mu.Lock()
				q.contended = queued
				if len(q.waiting) == 0 {
					// Nobody came meanwhile: the next call leads at once.
					q.busy = false
					delete(b.qs, key)
					b.mu.Unlock()
					return
				}
				b.mu.Unlock()
				var failed error
				if noBroker(ctx, err) {
					failed = err // the calls that waited for it fail with it
				}
				go c.blockLoop(key, q, o, failed)
			})
		}
		err := c.rateAnswered(ctx, name, occupy, opts, func(queued bool) { answered(queued, nil) })
		answered(false, err)
		return err
	}
	call := &blockCall{ctx: ctx, done: make(chan error, 1), turn: make(chan struct{}), phase: make(chan struct{}), left: make(chan struct{})}
	q.waiting = append(q.waiting, call)
	b.mu.Unlock()

	select {
	case err := <-call.done:
		return err
	case <-call.turn:
		return c.takeTurn(call, name, occupy, opts)
	case <-ctx.Done():
	}
	b.mu.Lock()
	if q.remove(call) {
		b.mu.Unlock()
		return ctxError(ctx)
	}
	call.gone = true
	close(call.left)
	b.mu.Unlock()
	select {
	case err := <-call.done:
		if err == nil {
			return nil
		}
	default:
	}
	return ctxError(ctx)
}

// takeTurn sends the call's own blocking request (at once refused by
// request if ctx has ended) and tells the loop when it is answered.
func (c *Client) takeTurn(call *blockCall, name string, occupy int, opts []AcquireOption) error {
	var once sync.Once
	finish := func(queued bool, err error) {
		once.Do(func() {
			call.queued = queued
			call.err = err
			close(call.phase)
		})
	}
	err := c.rateAnswered(call.ctx, name, occupy, opts, func(queued bool) { finish(queued, nil) })
	finish(false, err)
	return err
}

// rateAnswered is a blocking rate request that calls answered(true) as soon
// as the broker has queued it; the caller calls answered(false) once it
// returns otherwise.
func (c *Client) rateAnswered(ctx context.Context, name string, occupy int, opts []AcquireOption, answered func(queued bool)) error {
	user := collect(opts).queued
	opts = append(opts[:len(opts):len(opts)], WithQueued(func(q Queued) {
		answered(true)
		if user != nil {
			user(q)
		}
	}))
	return c.rate(ctx, name, occupy, false, opts)
}

// noBroker tells whether err, from a request whose ctx is still live, means
// that no broker answered for a whole retry window.
func noBroker(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && errors.Is(err, ErrUnavailable)
}

// blockLoop serves the calls of q that waited for a request of theirs, in
// arrival order, until none wait. A non-nil failed (no broker answered the
// request they waited for) fails the first batch at once.
func (c *Client) blockLoop(key tryKey, q *blockQueue, o acquireOptions, failed error) {
	b := &c.blocks
	for {
		b.mu.Lock()
		batch := q.take()
		if len(batch) == 0 {
			delete(b.qs, key)
			b.mu.Unlock()
			return
		}
		contended := q.contended
		b.mu.Unlock()

		turns := batch
		if !contended && failed == nil {
			turns = c.admitBatch(key, batch, o)
		}
		for _, call := range turns {
			b.mu.Lock()
			if call.gone || call.ctx.Err() != nil || failed != nil {
				b.mu.Unlock()
				if failed != nil && call.ctx.Err() == nil {
					call.done <- failed
				} else {
					call.done <- ctxError(call.ctx)
				}
				continue
			}
			close(call.turn)
			b.mu.Unlock()
			select {
			case <-call.phase:
				if call.queued || call.err == nil {
					// Answered by the broker (a call that gave up tells nothing).
					b.mu.Lock()
					q.contended = call.queued
					b.mu.Unlock()
				}
				if noBroker(call.ctx, call.err) {
					failed = call.err
				}
			case <-call.left:
			}
		}
		failed = nil // a later batch tries again
	}
}

// admitBatch sends one counted try for batch, answers the calls it admits
// (the first ones still waiting) or that fail with it, and returns the
// others, in order.
func (c *Client) admitBatch(key tryKey, batch []*blockCall, o acquireOptions) []*blockCall {
	var rest, later []*blockCall
	for len(batch) > 0 {
		part := batch[:min(len(batch), messages.MaxCount)]
		batch = batch[len(part):]
		ctxs := make([]context.Context, len(part))
		for i, call := range part {
			ctxs[i] = call.ctx
		}
		admitted, err := c.countedTry(key, ctxs, o, false)
		// Without a broker (or an answer) the calls take their turns: a
		// counted try is not re-sent, so that it cannot take slots for callers
		// who gave up meanwhile.
		if err != nil && !errors.Is(err, ErrNoSlots) && !(errors.Is(err, ErrUnavailable) && c.life.Err() == nil) {
			for _, call := range part {
				call.done <- err
			}
			continue
		}
		if err != nil {
			admitted = 0
		}
		if admitted < len(part) {
			// Refused calls take turns: later parts must not be admitted
			// before them, so they take turns too, in order.
			later = batch
			batch = nil
		}
		given := 0
		for _, call := range part {
			b := &c.blocks
			b.mu.Lock()
			gone := call.gone
			b.mu.Unlock()
			if !gone && call.ctx.Err() == nil && given < admitted {
				given++
				call.done <- nil
				continue
			}
			rest = append(rest, call)
		}
	}
	return append(rest, later...)
}
