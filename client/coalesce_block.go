package client

import (
	"context"
	"errors"
	"strings"
	"sync"
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
// A counted try that finds the limit just filled up counts its refused calls
// in denied_slots although they then queue; this happens once each time the
// limit becomes contended.

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
}

// blockQueue is the RateLimit calls of one key: busy while one of its
// requests has not been answered.
type blockQueue struct {
	busy bool
	// contended: the last request answered had to queue at the broker.
	contended bool
	waiting   []*blockCall
}

// blockBatcher holds the RateLimit queues of a Client.
type blockBatcher struct {
	mu sync.Mutex
	qs map[tryKey]*blockQueue
}

func keyOf(name string, occupy int, o acquireOptions) tryKey {
	return tryKey{name: name, occupy: occupy, names: strings.Join(o.names, ","), strict: o.strict, holder: o.holder}
}

// blockRate runs one RateLimit call, alone or coalesced.
func (c *Client) blockRate(ctx context.Context, name string, occupy int, opts []AcquireOption) error {
	o := collect(opts)
	if err := validate(name, occupy, o); err != nil {
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
	key := keyOf(name, occupy, o)
	b := &c.blocks
	b.mu.Lock()
	if b.qs == nil {
		b.qs = map[tryKey]*blockQueue{}
	}
	q := b.qs[key]
	if q == nil {
		q = &blockQueue{}
		b.qs[key] = q
	}
	if c.onRateCall != nil {
		c.onRateCall()
	}
	if !q.busy {
		q.busy = true
		b.mu.Unlock()
		var once sync.Once
		answered := func(queued bool) {
			once.Do(func() {
				b.mu.Lock()
				q.contended = queued
				b.mu.Unlock()
				go c.blockLoop(key, q, o)
			})
		}
		err := c.rateAnswered(ctx, name, occupy, opts, answered)
		answered(false)
		return err
	}
	call := &blockCall{ctx: ctx, done: make(chan error, 1), turn: make(chan struct{}), phase: make(chan struct{})}
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
	for i, w := range q.waiting {
		if w == call {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			b.mu.Unlock()
			return ctxError(ctx)
		}
	}
	b.mu.Unlock()
	// Taken by the loop already: it answers or gives the turn.
	select {
	case err := <-call.done:
		return err
	case <-call.turn:
		return c.takeTurn(call, name, occupy, opts)
	}
}

// takeTurn sends the call's own blocking request (at once refused by
// request if ctx has ended) and tells the loop when it is answered.
func (c *Client) takeTurn(call *blockCall, name string, occupy int, opts []AcquireOption) error {
	var once sync.Once
	answered := func(queued bool) {
		once.Do(func() {
			call.queued = queued
			close(call.phase)
		})
	}
	err := c.rateAnswered(call.ctx, name, occupy, opts, answered)
	answered(false)
	return err
}

// rateAnswered is a blocking rate request that calls answered(true) as soon
// as the broker has queued it; the caller calls answered(false) once it
// returns otherwise.
func (c *Client) rateAnswered(ctx context.Context, name string, occupy int, opts []AcquireOption, answered func(queued bool)) error {
	user := collect(opts).queued
	opts = append(opts[:len(opts):len(opts)], WithQueued(func(position int) {
		answered(true)
		if user != nil {
			user(position)
		}
	}))
	return c.rate(ctx, name, occupy, false, opts)
}

// blockLoop serves the calls of q that waited for a request of theirs, in
// arrival order, until none wait.
func (c *Client) blockLoop(key tryKey, q *blockQueue, o acquireOptions) {
	b := &c.blocks
	for {
		b.mu.Lock()
		batch := q.waiting
		q.waiting = nil
		if len(batch) == 0 {
			q.busy = false
			delete(b.qs, key)
			b.mu.Unlock()
			return
		}
		contended := q.contended
		b.mu.Unlock()

		turns := batch
		if !contended {
			turns = c.admitBatch(key, batch, o)
		}
		for _, call := range turns {
			if call.ctx.Err() != nil {
				call.done <- ctxError(call.ctx) // gone: no request for it
				continue
			}
			close(call.turn)
			<-call.phase
			b.mu.Lock()
			q.contended = call.queued
			b.mu.Unlock()
		}
	}
}

// admitBatch sends one counted try for batch, answers the calls it admits
// (the first ones still waiting) or that fail with it, and returns the
// others, in order.
func (c *Client) admitBatch(key tryKey, batch []*blockCall, o acquireOptions) []*blockCall {
	ctxs := make([]context.Context, len(batch))
	for i, call := range batch {
		ctxs[i] = call.ctx
	}
	admitted, err := c.countedTry(key, ctxs, o)
	if err != nil && !errors.Is(err, ErrNoSlots) {
		for _, call := range batch {
			call.done <- err
		}
		return nil
	}
	if err != nil {
		admitted = 0
	}
	var rest []*blockCall
	given := 0
	for _, call := range batch {
		if call.ctx.Err() == nil && given < admitted {
			given++
			call.done <- nil
			continue
		}
		rest = append(rest, call)
	}
	return rest
}
