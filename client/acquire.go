package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Acquire blocks until occupy slots of name (and of every WithNames limit,
// all or nothing) are granted, and returns the Lease, which is renewed in the
// background until Release. The wait is FIFO at the broker and ends with a
// pushed grant. On failure it returns an error matching one of the sentinels
// (ErrTimeout when WithTimeout or ctx's deadline passes) and holds nothing:
// a grant that races with the cancellation is given back.
//
// A missing or inactive limit is not enforced: a warning is logged and the
// returned Lease holds nothing (Unlimited reports true); WithStrict makes
// both errors instead.
func (c *Client) Acquire(ctx context.Context, name string, occupy int, opts ...AcquireOption) (*Lease, error) {
	return c.acquire(ctx, name, occupy, false, opts)
}

// TryAcquire is Acquire that never waits: it returns a Lease or ErrNoSlots
// at once and never joins the queue.
func (c *Client) TryAcquire(ctx context.Context, name string, occupy int, opts ...AcquireOption) (*Lease, error) {
	return c.acquire(ctx, name, occupy, true, opts)
}

// Do acquires the slots, runs fn, and releases them however fn ends. The
// context given to fn is cancelled when the lease is lost; in strict mode Do
// then returns an error matching ErrLeaseLost (joined with fn's error).
func (c *Client) Do(ctx context.Context, name string, occupy int, fn func(context.Context) error, opts ...AcquireOption) error {
	o := collect(opts)
	l, err := c.acquire(ctx, name, occupy, false, opts)
	if err != nil {
		return err
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.Context(), func() { cancel(context.Cause(l.Context())) })
	finish := func() error {
		stop()
		cancel(nil)
		lost := l.Err()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.requestTimeout)
		defer rcancel()
		if err := l.Release(rctx); err != nil && lost == nil {
			c.log.Warn("slotbroker: release failed; the lease will expire", "limit", name, "err", err)
		}
		return lost
	}
	returned := false
	defer func() {
		if !returned { // fn panicked or called runtime.Goexit: release anyway
			_ = finish()
		}
	}()
	fnErr := fn(fnCtx)
	returned = true
	lost := finish()
	if lost != nil {
		if o.strict {
			return joinErr(lost, fnErr)
		}
		c.log.Warn("slotbroker: lease was lost while the work ran", "limit", name, "err", lost)
	}
	return fnErr
}

func joinErr(a, b error) error {
	if b == nil {
		return a
	}
	return fmt.Errorf("%w; the work returned: %w", a, b)
}

func collect(opts []AcquireOption) acquireOptions {
	var o acquireOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// validate checks what can be checked without the broker. It returns the
// limit reference to acquire: name, or "<name>.<key>" with WithKey.
func validate(name string, occupy int, o acquireOptions) (string, error) {
	for _, n := range append([]string{name}, o.names...) {
		if err := checkName(n); err != nil {
			return "", err
		}
	}
	if o.keyed {
		if e := messages.ValidateKey(o.key); e != nil {
			return "", fromWire(e)
		}
		if len(o.names) > 0 {
			return "", fromWire(messages.Errorf(messages.CodeInvalidArgument,
				"WithKey and WithNames together: a key of a per-key limit is acquired alone"))
		}
		name = messages.KeyedName(name, o.key)
	}
	if o.priority < 0 || o.priority > messages.MaxPriority {
		return "", fromWire(messages.Errorf(messages.CodeInvalidArgument, "priority %d: give 0 (the default, lowest) to %d", o.priority, messages.MaxPriority))
	}
	if names := limitNames(name, o.names); len(names) > messages.MaxNames {
		return "", fromWire(messages.Errorf(messages.CodeInvalidArgument,
			"the acquisition names %d limits (%q and %d more): the maximum is %d", len(names), name, len(names)-1, messages.MaxNames))
	}
	if e := messages.CheckHolder(o.holder); e != nil {
		return "", fromWire(e)
	}
	if occupy <= 0 {
		return "", fromWire(messages.Errorf(messages.CodeInvalidOccupy, "occupy is %d: ask for at least 1 slot", occupy))
	}
	if o.ttl < 0 {
		return "", fromWire(messages.Errorf(messages.CodeInvalidArgument, "lease ttl %v is negative", o.ttl))
	}
	if o.ttl > 0 && o.ttl < time.Millisecond {
		// The wire carries whole milliseconds, and 0 means the broker's default.
		return "", fromWire(messages.Errorf(messages.CodeInvalidArgument,
			"lease ttl %v is under 1ms, the wire's unit (0 would mean the broker's default): ask for at least 1ms", o.ttl))
	}
	return name, nil
}

// limitNames are the limits an acquisition of name with WithNames others
// takes: name first, then the others in the order given, each once.
func limitNames(name string, others []string) []string {
	names := []string{name}
	if len(others) == 0 {
		return names
	}
	seen := map[string]bool{name: true}
	for _, n := range others {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names
}

// acquireSubject is the subject of an acquisition of names (limitNames):
// "<prefix>.v1.acquire.<name>" for one limit, and
// "<prefix>.v1.acquire-many.<name>.<name>..." for more, so that NATS
// permissions can grant them separately.
func (c *Client) acquireSubject(names []string) string {
	if len(names) == 1 {
		return c.subj.Verb(messages.VerbAcquire, names[0])
	}
	return c.subj.AcquireMany(names)
}

// request sends an acquisition and, when it is queued, waits for the pushed
// grant. It returns the granted lease (nil for a rate admission or when no
// limit was enforced) and the reply's missing and inactive names.
func (c *Client) request(ctx context.Context, name string, req *messages.AcquireRequest, o acquireOptions) (*messages.LeaseGrant, messages.AcquireReply, error) {
	return c.sendAcquire(ctx, name, req, o, true)
}

// sendAcquire is request; with retry it re-sends while no broker answers.
func (c *Client) sendAcquire(ctx context.Context, name string, req *messages.AcquireRequest, o acquireOptions, retry bool) (*messages.LeaseGrant, messages.AcquireReply, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		// Checked first: a try would otherwise take slots for nobody.
		return nil, messages.AcquireReply{}, fmt.Errorf("%w: acquiring %q", ErrClosed, name)
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	var ch chan pushed
	// A wait id on every request makes retries idempotent at the broker.
	// It is random, so that nobody can guess a wait of this client's; the
	// key, random too, is echoed only in the broker's grant and in the
	// notice of the lease's revocation, both pushed to notify, so that
	// nobody else can forge one (onGrant, onRevoked). A try has no grant
	// pushed, but a lease it gets can be revoked: it sends both too (a rate
	// admission has no lease). A retry of the request (c.call) sends them again.
	req.WaitID = rand.Text()
	if !req.Try || !req.Rate {
		if req.Key == "" { // acquire chose it already
			req.Key = rand.Text()
		}
		req.Notify = c.inbox + req.WaitID
	}
	if !req.Try {
		var err error
		if ch, err = c.expectWait(req.WaitID, req.Key); err != nil {
			return nil, messages.AcquireReply{}, err
		}
	}
	// The names are in the subject; the body names none.
	req.Names = nil
	names := limitNames(name, o.names)
	var reply messages.AcquireReply
	if err := c.call(ctx, c.acquireSubject(names), req, &reply, retry); err != nil {
		switch {
		case ctx.Err() == nil:
			c.forgetWait(req.WaitID)
		case req.Try || c.forgetWait(req.WaitID):
			// The broker may have queued or granted the request before we
			// gave up: withdraw it (a cancel also releases a granted lease).
			c.giveBack(req.WaitID, name, false)
		default:
			// A pushed grant was accepted just as we gave up: give it back.
			p := <-ch
			c.forgetAccepted(req.WaitID)
			if p.err == nil && p.grant.Error == nil {
				c.giveBack(req.WaitID, name, true)
			}
		}
		return nil, reply, err
	}
	if err := fromWire(reply.Error); err != nil {
		c.forgetWait(req.WaitID)
		return nil, reply, err
	}
	if reply.Status == messages.StatusGranted {
		c.forgetWait(req.WaitID)
		return reply.Lease, reply, nil
	}
	o.tellQueued(&reply, true)
	recheck := time.NewTimer(recheckEvery)
	defer recheck.Stop()
	for {
		select {
		case p := <-ch:
			if p.err != nil {
				return nil, reply, p.err // the broker passed the slots on
			}
			if err := fromWire(p.grant.Error); err != nil {
				return nil, reply, err
			}
			g := p.grant.Lease
			if g == nil {
				return nil, reply, nil // a rate admission
			}
			held, err := c.confirm(ctx, name, g)
			if err != nil {
				c.forgetAccepted(req.WaitID)
				c.giveBack(req.WaitID, name, true)
				return nil, reply, err
			}
			if held {
				return g, reply, nil
			}
			// The broker did not hear the acceptance in time and passed
			// the slots on: wait again (the acquisition is sent again below).
			c.forgetAccepted(req.WaitID)
			if ch, err = c.expectWait(req.WaitID, req.Key); err != nil {
				return nil, reply, err
			}
		case <-c.reconnected():
		case <-recheck.C:
			recheck.Reset(recheckEvery)
		case <-c.gone:
			c.forgetWait(req.WaitID)
			return nil, reply, fmt.Errorf("%w: the NATS connection or the client was closed while waiting for %q", ErrClosed, name)
		case <-ctx.Done():
			if !c.forgetWait(req.WaitID) {
				// The grant arrived as we gave up: it was accepted; give it back.
				p := <-ch
				c.forgetAccepted(req.WaitID)
				if p.err == nil && p.grant.Error == nil {
					c.giveBack(req.WaitID, name, true)
				}
			} else {
				c.giveBack(req.WaitID, name, false)
			}
			return nil, reply, ctxError(ctx)
		}
		// Send the acquisition again (same wait id and key): the broker
		// answers where it stands, or queues it again if it passed the
		// slots on because nobody answered the grant.
		if g, done, err := c.resend(ctx, names, req, ch, &o); done {
			return g, reply, err
		}
	}
}

// confirm renews a pushed grant's lease before it is used: the GrantAck
// that accepted it may have been lost (the waiter's server died), after
// which the broker passes the slots on at the grant timeout; a renewal
// accepts a pending lease, so a lease that renews is held. It reports
// false when the broker no longer holds the lease, and updates the
// grant's deadline from the renewal.
func (c *Client) confirm(ctx context.Context, name string, g *messages.LeaseGrant) (bool, error) {
	var reply messages.RenewReply
	sent := time.Now()
	// On the acquisition's own limit: the lease may hold none of its names
	// (granted as the limit was deactivated), but it is within its scope.
	if err := c.call(ctx, c.subj.Verb(messages.VerbRenew, name), &messages.RenewRequest{LeaseID: g.ID}, &reply, true); err != nil {
		return false, err
	}
	if err := fromWire(reply.Error); err != nil {
		if errors.Is(err, ErrLeaseLost) {
			return false, nil
		}
		return false, err
	}
	g.TTLMillis = reply.TTLMillis
	g.ExpiresAt = sent.Add(time.Duration(reply.TTLMillis) * time.Millisecond)
	return true, nil
}

// recheckEvery is how often a queued acquisition is sent again besides at
// every reconnection: a grant can also be lost to a responder that the
// broker's server did not yet know of.
const recheckEvery = 30 * time.Second

// resend sends a queued acquisition again. It reports done with the lease
// when the answer is a grant, or with the error the broker now gives;
// otherwise the wait goes on (an answer that did not come is no news).
func (c *Client) resend(ctx context.Context, names []string, req *messages.AcquireRequest, ch chan pushed, o *acquireOptions) (*messages.LeaseGrant, bool, error) {
	var again messages.AcquireReply
	if err := c.call(ctx, c.acquireSubject(names), req, &again, true); err != nil {
		return nil, false, nil
	}
	err := fromWire(again.Error)
	if err == nil && again.Status != messages.StatusGranted {
		if again.Status == messages.StatusQueued {
			o.tellQueued(&again, false)
		}
		return nil, false, nil
	}
	if !c.forgetWait(req.WaitID) {
		// A pushed grant was delivered meanwhile: it is the same lease.
		p := <-ch
		if p.err != nil {
			return nil, true, p.err
		}
		if e := fromWire(p.grant.Error); e != nil {
			return nil, true, e
		}
		return p.grant.Lease, true, nil
	}
	return again.Lease, true, err
}

// giveBack cancels a wait at the broker, which also releases a lease granted
// to it. Unless held (a grant was accepted), it tries once, so that a caller
// who gave up is not held back while no broker answers: a grant pushed later
// for the wait is declined anyway.
func (c *Client) giveBack(waitID, name string, held bool) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.requestTimeout)
	defer cancel()
	var reply messages.CancelReply
	if err := c.call(ctx, c.subj.Verb(messages.VerbCancel, name), &messages.CancelRequest{WaitID: waitID}, &reply, held); err != nil {
		c.log.Warn("slotbroker: could not withdraw a wait; its grant will be declined", "limit", name, "err", err)
	}
}

func (c *Client) acquire(ctx context.Context, name string, occupy int, try bool, opts []AcquireOption) (*Lease, error) {
	o := collect(opts)
	name, err := validate(name, occupy, o)
	if err != nil {
		return nil, err
	}
	req := &messages.AcquireRequest{Occupy: occupy, TTLMillis: o.ttl.Milliseconds(), Holder: o.holder,
		Strict: o.strict, Try: try, Priority: o.priority, Key: rand.Text()}
	// A revocation notice of the lease may come before the lease: it is
	// kept only for a key of an acquisition in flight (onRevoked).
	c.expectNotices(req.Key)
	defer c.forgetNotices(req.Key)
	sent := time.Now()
	g, reply, err := c.request(ctx, name, req, o)
	if err != nil {
		return nil, err
	}
	c.warnUnenforced(name, reply)
	// Count the lease's time from no later than the broker does: an immediate
	// grant's clock starts after the request left; a pushed grant's when the
	// broker gets its acceptance, which onGrant stamped in ExpiresAt.
	if g != nil && reply.Status == messages.StatusQueued {
		sent = g.ExpiresAt.Add(-time.Duration(g.TTLMillis) * time.Millisecond)
	}
	return c.newLease(g, req.WaitID, req.Key, sent)
}

func (c *Client) warnUnenforced(name string, reply messages.AcquireReply) {
	if len(reply.Missing) > 0 {
		c.log.Warn("slotbroker: limits do not exist; proceeding without them (create them, or use strict mode to fail)",
			"limit", name, "missing", joinNames(reply.Missing))
	}
	if len(reply.Inactive) > 0 {
		c.log.Warn("slotbroker: limits are inactive and not enforced", "limit", name, "inactive", joinNames(reply.Inactive))
	}
}
