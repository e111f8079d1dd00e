package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Lease is a grant of slots. While it is held the client renews it in the
// background, retrying through transient failures until the lease has really
// expired. Done is closed when the lease ends: released, or lost (expired,
// voided by a deletion, revoked by an operator); Err then tells which. A
// Lease is safe for concurrent use.
type Lease struct {
	c      *Client
	grant  messages.LeaseGrant
	waitID string
	// key is the secret sent with the acquisition: only a RevokedNotice
	// carrying it comes from the broker (Client.onRevoked).
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	expires  time.Time
	err      error
	released bool
	ended    bool
}

// newLease wraps a grant (nil: nothing enforced) of the acquisition waitID,
// sent with key, and starts renewing it.
func (c *Client) newLease(g *messages.LeaseGrant, waitID, key string, now time.Time) (*Lease, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{c: c, ctx: ctx, cancel: cancel, stop: make(chan struct{}), waitID: waitID, key: key}
	if g == nil {
		return l, nil
	}
	l.grant = *g
	l.expires = now.Add(time.Duration(g.TTLMillis) * time.Millisecond)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.leases[l] = struct{}{}
	early, revoked := c.early.take(g.ID, key)
	c.mu.Unlock()
	l.wg.Add(1)
	go l.renewLoop()
	if revoked {
		l.end(revokedError(early))
	}
	return l, nil
}

// ID is the lease id ("" when nothing was enforced).
func (l *Lease) ID() string { return l.grant.ID }

// Token is the fencing token: strictly greater than every token issued
// before on the same limits, also across broker restarts. Pass it to the
// resource you guard so it can refuse a stale holder. 0 when unlimited.
func (l *Lease) Token() uint64 { return l.grant.Token }

// Names are the limits the lease holds slots on.
func (l *Lease) Names() []string { return append([]string(nil), l.grant.Names...) }

// Occupy is the number of slots held on each limit.
func (l *Lease) Occupy() int { return l.grant.Occupy }

// Unlimited reports whether no limit was enforced (missing or inactive, not strict).
func (l *Lease) Unlimited() bool { return l.grant.ID == "" }

// ExpiresAt is the lease's deadline as last renewed.
func (l *Lease) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expires
}

// Done is closed when the lease ends, by Release or by loss. A revoked
// lease ends as soon as the broker's notice of the revocation arrives, not
// at its next renewal.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Context is cancelled when the lease ends; its cause is ErrLeaseLost (wrapped)
// after a loss, ErrLeaseRevoked (which matches ErrLeaseLost) after a revocation.
func (l *Lease) Context() context.Context { return l.ctx }

// Err is nil while the lease is held or after Release, and matches
// ErrLeaseLost once it was lost; after a revocation it also matches
// ErrLeaseRevoked, and its text gives the revocation's reason and revoker.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Release gives the slots back. It is idempotent: releasing twice, or a lost
// lease, returns nil. It retries while no broker answers, within ctx; after
// it failed, Release can be called again.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released || l.err != nil {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	l.end(nil)
	if l.Unlimited() {
		return nil
	}
	var reply messages.ReleaseReply
	err := l.c.call(ctx, l.c.subj.Verb(messages.VerbRelease, l.grant.Names0()), &messages.ReleaseRequest{LeaseID: l.grant.ID}, &reply, true)
	if err == nil {
		err = fromWire(reply.Error)
	}
	if err != nil {
		// Not released: a later Release must try again, not report success.
		l.mu.Lock()
		l.released = false
		l.mu.Unlock()
	}
	return err
}

// end stops renewal and closes Done, once; cause nil means released.
func (l *Lease) end(cause error) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	if cause != nil {
		l.err = cause
	}
	l.mu.Unlock()
	close(l.stop)
	if cause == nil {
		cause = context.Canceled
	}
	l.cancel(cause)
	l.c.mu.Lock()
	delete(l.c.leases, l)
	delete(l.c.accepted, l.waitID)
	l.c.mu.Unlock()
}

// abandon stops renewing without releasing (Client.Close).
func (l *Lease) abandon() {
	l.end(fmt.Errorf("%w: client closed", ErrLeaseLost))
	l.wg.Wait()
}

// renewLoop renews every third of the TTL; a failure is retried with backoff
// until the lease's deadline has passed. An answer that the broker no longer
// holds the lease ends it at once.
func (l *Lease) renewLoop() {
	defer l.wg.Done()
	ttl := time.Duration(l.grant.TTLMillis) * time.Millisecond
	interval := ttl / 3
	wait := interval
	for {
		select {
		case <-l.stop:
			return
		case <-time.After(wait):
		}
		deadline := l.ExpiresAt()
		if !time.Now().Before(deadline) {
			l.end(fmt.Errorf("%w: lease %s expired at %s before it could be renewed", ErrLeaseLost, l.grant.ID, deadline.Format(time.RFC3339Nano)))
			return
		}
		// Derived from the lease's context: Release or Client.Close stop a
		// renewal in flight instead of waiting for it to give up.
		ctx, cancel := context.WithDeadline(l.ctx, deadline)
		sent := time.Now()
		var reply messages.RenewReply
		err := l.c.call(ctx, l.c.subj.Verb(messages.VerbRenew, l.grant.Names0()), &messages.RenewRequest{LeaseID: l.grant.ID}, &reply, true)
		cancel()
		if l.ctx.Err() != nil {
			return // the lease ended meanwhile
		}
		if err == nil {
			err = fromWire(reply.Error)
		}
		switch {
		case err == nil:
			l.mu.Lock()
			// Count from when the request left: the broker's deadline is no earlier.
			l.expires = sent.Add(time.Duration(reply.TTLMillis) * time.Millisecond)
			l.mu.Unlock()
			wait = interval
		case errors.Is(err, ErrLeaseLost):
			l.end(err)
			return
		default:
			l.c.log.Warn("slotbroker: lease renewal failed; retrying until it expires", "lease", l.grant.ID, "err", err)
			wait = min(interval, max(100*time.Millisecond, time.Until(l.ExpiresAt())/4))
		}
	}
}
