package client

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/slotbroker/slotbroker/messages"
)

// Client talks to slotbroker over one NATS connection. Create it with New;
// Close it when done (it does not close the connection).
type Client struct {
	nc   *nats.Conn
	opts options
	subj messages.Subjects
	log  *slog.Logger

	inbox string
	sub   *nats.Subscription
	// gone is closed when the grant subscription ends (Close, or the
	// connection closed): nothing can be granted any more. life ends then
	// too; it bounds work that no caller's context does.
	gone chan struct{}
	life context.Context

	mu    sync.Mutex
	waits map[string]*wait
	// accepted maps the wait ids of held leases to their grants, so that a
	// grant pushed again (after a broker restart) is accepted, not declined.
	accepted map[string]*heldGrant
	leases   map[*Lease]struct{}
	// early keeps the last revocation notices of leases the client did
	// not hold yet (revoke.go).
	early earlyNotices
	// inflightKeys counts the keys of the acquisitions in flight: only a
	// notice with one of them is kept early (revoke.go).
	inflightKeys map[string]int
	closed       bool

	// flights are the calls in flight by subject, for a permissions
	// violation to end at once (permission.go).
	flightsMu sync.Mutex
	flights   map[string]map[*flight]struct{}
	// disp passes the connection's async errors to the Client (permission.go).
	disp *dispatcher
	// errorsOff makes the Client's async error handler a no-op (Close).
	errorsOff atomic.Bool
	// ackVerified is set once the server is known to have let an accepting
	// GrantAck of this Client through; until then each is checked (onGrant).
	ackVerified atomic.Bool
	// acksDenied, under mu, is the error of a GrantAck the server refused:
	// the user may not answer grants, so no queued acquisition can succeed.
	acksDenied error
	// inboxDenied is set when the server refused the grant subscription.
	inboxDenied atomic.Bool
	// started is set when New returns the Client.
	started atomic.Bool

	// status reports the connection's reconnections; reconn is closed and
	// replaced at each, so that waits send their acquisitions again
	// (acquire.go): a grant pushed while the connection was down found no
	// responder, and the broker passed the slots on.
	status   chan nats.Status
	reconnMu sync.Mutex
	reconn   chan struct{}

	// tries coalesces concurrent TryRateLimit calls (coalesce.go).
	tries tryBatcher
	// blocks coalesces concurrent RateLimit calls (coalesce_block.go).
	blocks blockBatcher
	// onRateCall, set only by tests, runs when a RateLimit call has taken
	// its place in its key's order.
	onRateCall func()
}

// New returns a Client on nc. It subscribes to one inbox for pushed grants,
// "<inbox prefix>.<token>.*" (nats.CustomInboxPrefix sets the prefix), and
// when connected makes sure the server took the subscription: a NATS user
// that may not subscribe to it gets an error matching ErrPermissionDenied.
//
// The first Client on nc chains one handler before nc's async error handler
// (which still gets every error), shared by every Client on nc, so that a
// request the server refuses to let the user publish fails at once with
// ErrPermissionDenied instead of timing out. Set nc's own error handler
// before the first New: one set later replaces the chained one. The handler
// stays chained after Close, passing errors on only; a closed Client leaves
// nothing of itself behind on nc.
//
// A user that may not publish the answer to a pushed grant (its permissions
// lack allow_responses) cannot take a queued acquisition: the broker never
// hears the acceptance and passes the slots on. So the Client checks, until
// one has gone through, that the server let its acceptance of a grant
// through (a flush of the connection after answering): if not, the Acquire
// (or RateLimit) that was granted fails with an error matching
// ErrPermissionDenied, and so does every later acquisition of the Client
// that would queue, at once, without queueing. TryAcquire and TryRateLimit
// need no grant and still work.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nats connection is nil", ErrInvalidArgument)
	}
	if nc.IsClosed() { // as the subscription would fail, without chaining anything to nc
		return nil, fmt.Errorf("%w: subscribe to grants: %v", ErrUnavailable, nats.ErrConnectionClosed)
	}
	o := options{prefix: messages.DefaultPrefix, log: slog.Default(), requestTimeout: 5 * time.Second, retryFor: 30 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &Client{nc: nc, opts: o, subj: messages.NewSubjects(o.prefix), log: o.log,
		inbox: nc.NewInbox() + ".", waits: map[string]*wait{}, accepted: map[string]*heldGrant{}, leases: map[*Lease]struct{}{},
		flights: map[string]map[*flight]struct{}{}}
	// Before subscribing: the handler must see a refusal of the subscription.
	c.register()
	sub, err := nc.Subscribe(c.inbox+"*", c.onGrant)
	if err != nil {
		c.errorsOff.Store(true)
		c.unregister()
		return nil, fmt.Errorf("%w: subscribe to grants: %v", ErrUnavailable, err)
	}
	c.sub = sub
	c.gone = make(chan struct{})
	var end context.CancelFunc
	c.life, end = context.WithCancel(context.Background())
	// Called once when the subscription's delivery ends: unsubscribed, or
	// its connection closed.
	var once sync.Once
	c.reconn = make(chan struct{})
	c.status = nc.StatusChanged(nats.CONNECTED)
	go c.watchReconnects()
	sub.SetClosedHandler(func(string) {
		once.Do(func() {
			close(c.gone)
			end()
			c.unregister() // the connection may have closed without Close
			nc.RemoveStatusListener(c.status)
		})
	})
	if err := c.checkInbox(); err != nil {
		c.errorsOff.Store(true)
		_ = sub.Unsubscribe()
		c.unregister()
		nc.RemoveStatusListener(c.status)
		return nil, err
	}
	c.started.Store(true)
	return c, nil
}

// Close stops renewing every lease this client holds (without releasing
// them; they expire at the broker) and stops receiving grants. It is safe to
// call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.errorsOff.Store(true)
	leases := make([]*Lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	c.mu.Unlock()
	for _, l := range leases {
		l.abandon()
	}
	err := c.sub.Unsubscribe()
	c.unregister()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}

// watchReconnects wakes the waits at each reconnection, until the status
// listener is removed (the grant subscription ended).
func (c *Client) watchReconnects() {
	for range c.status {
		c.reconnMu.Lock()
		close(c.reconn)
		c.reconn = make(chan struct{})
		c.reconnMu.Unlock()
	}
}

// reconnected returns a channel closed at the next reconnection.
func (c *Client) reconnected() <-chan struct{} {
	c.reconnMu.Lock()
	defer c.reconnMu.Unlock()
	return c.reconn
}

// wait is a registered wait for a pushed grant.
type wait struct {
	ch chan pushed
	// key is the secret sent with the request: only a grant carrying it
	// comes from the broker.
	key string
	// warned: a forged grant for this wait was logged.
	warned bool
}

// pushed is what a wait gets: the grant the broker pushed, or err when the
// grant could not be taken (the server refused its acceptance).
type pushed struct {
	grant messages.Grant
	err   error
}

// heldGrant is an accepted grant whose lease is held.
type heldGrant struct {
	lease  string
	key    string
	warned bool
}

// sameKey compares a grant's key with the one sent, in constant time.
func sameKey(sent, got string) bool {
	return subtle.ConstantTimeCompare([]byte(sent), []byte(got)) == 1
}

// onGrant handles what arrives on the Client's inbox: the notice of a
// lease's revocation (onRevoked), or a pushed grant, which it answers:
// accepted when its wait is still current,
// declined otherwise (the caller gave up), so the broker passes it on. A
// grant for a wait of this client (waiting, or held) that does not carry
// the wait's key was not sent by the broker: it is dropped unanswered. An
// acceptance is checked (respondChecked) until one has gone through: one the
// server refused is no lease, and the waiter gets the refusal.
func (c *Client) onGrant(m *nats.Msg) {
	var g messages.Grant
	enc, err := messages.Decode(m.Data, &g)
	if err != nil {
		c.log.Warn("slotbroker: undecodable grant", "subject", m.Subject, "err", err)
		return
	}
	if g.WaitID == "" && g.Lease == nil && g.Error == nil {
		// Not a Grant: the notice of a held lease's revocation?
		var n messages.RevokedNotice
		if _, err := messages.Decode(m.Data, &n); err == nil && n.Revoked != "" {
			c.onRevoked(n)
			return
		}
	}
	c.mu.Lock()
	w, ok := c.waits[g.WaitID]
	held := c.accepted[g.WaitID]
	var forged *bool // the warned flag of the wait a forged grant names
	switch {
	case ok && !sameKey(w.key, g.Key):
		forged = &w.warned
	case !ok && held != nil && !sameKey(held.key, g.Key):
		forged = &held.warned
	}
	if forged != nil {
		warn := !*forged
		*forged = true
		c.mu.Unlock()
		if warn {
			c.log.Warn("slotbroker: dropped a grant that does not carry the key sent with the request: it was not sent by the broker (someone else publishes to this client's inbox)",
				"subject", m.Subject, "wait", g.WaitID)
		}
		return
	}
	if ok {
		delete(c.waits, g.WaitID)
		if g.Lease != nil {
			c.accepted[g.WaitID] = &heldGrant{lease: g.Lease.ID, key: w.key}
		}
	}
	again := !ok && g.Lease != nil && held != nil && held.lease == g.Lease.ID
	c.mu.Unlock()
	if ok && g.Lease != nil {
		// The broker starts the lease's clock when it has this acceptance.
		g.Lease.ExpiresAt = time.Now().Add(time.Duration(g.Lease.TTLMillis) * time.Millisecond)
	}
	var refused error
	if m.Reply != "" {
		accept := ok || again
		if data, err := messages.Marshal(enc, messages.GrantAck{Accept: accept}); err == nil {
			if accept && !c.ackVerified.Load() {
				refused = c.respondChecked(m, data)
			} else {
				_ = m.Respond(data)
			}
		}
	}
	if refused != nil {
		c.mu.Lock()
		if c.acksDenied == nil {
			c.acksDenied = refused
		}
		if ok {
			delete(c.accepted, g.WaitID) // the broker never had the acceptance
		}
		c.mu.Unlock()
		c.log.Warn("slotbroker: the NATS server refused this client's acceptance of a grant; queued acquisitions fail until the user may answer grants",
			"subject", m.Subject, "wait", g.WaitID, "err", refused)
	}
	if ok {
		w.ch <- pushed{grant: g, err: refused}
	}
}

// respondChecked answers m with data, an acceptance, and makes sure the
// server let it through: it flushes the connection, and the server, which
// handles the answer before the flush's PING, has sent a permissions
// violation naming m.Reply before the PONG. It returns the refusal (an
// error matching ErrPermissionDenied), or nil; once an acceptance has gone
// through it is not checked again, since the user's permissions do not
// change from one grant to the next. When the flush fails nothing is known,
// and the next acceptance is checked instead.
func (c *Client) respondChecked(m *nats.Msg, data []byte) error {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	defer c.track(m.Reply, cancel)() // the dispatcher may see the violation first
	if err := m.Respond(data); err != nil {
		return nil
	}
	if err := c.nc.FlushTimeout(c.opts.requestTimeout); err != nil {
		return nil
	}
	last := c.nc.LastError()
	s, ok := violated(last, publishViolation)
	switch {
	case ok && s == m.Reply:
	case errors.Is(context.Cause(ctx), ErrPermissionDenied):
		last = context.Cause(ctx)
	default:
		c.ackVerified.Store(true)
		return nil
	}
	return &permissionError{cause: last, msg: fmt.Sprintf(
		"the NATS user may not answer grants: allow_responses is not in its permissions (nor a publish right on the broker's reply subject %q), so the server refused the acceptance and the broker passes the slots on; give the user allow_responses: true (PROTOCOL.md §3.3)", m.Reply)}
}

// expectWait registers a wait id, with the key sent for it, for a pushed
// grant. It fails at once when the server refused an acceptance of this
// Client before: such a wait could never be granted.
func (c *Client) expectWait(id, key string) (chan pushed, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.acksDenied != nil {
		return nil, fmt.Errorf("%w (an earlier acceptance was refused, so this acquisition was not sent)", c.acksDenied)
	}
	ch := make(chan pushed, 1)
	c.waits[id] = &wait{ch: ch, key: key}
	return ch, nil
}

// forgetAccepted drops the record of an accepted grant.
func (c *Client) forgetAccepted(waitID string) {
	c.mu.Lock()
	delete(c.accepted, waitID)
	c.mu.Unlock()
}

// forgetWait drops a wait id; it reports whether it was still registered
// (false: a grant was delivered to the channel).
func (c *Client) forgetWait(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.waits[id]
	delete(c.waits, id)
	return ok
}

// call sends req to subject and decodes the answer into reply. With retry,
// it retries while no broker answers, up to the retry window and ctx. When
// the NATS server refuses this user to publish on subject, it fails at once
// with an error matching ErrPermissionDenied.
func (c *Client) call(ctx context.Context, subject string, req, reply any, retry bool) error {
	data, err := messages.Marshal(messages.Msgpack, req)
	if err != nil {
		return fmt.Errorf("%w: encode request: %v", ErrInvalidArgument, err)
	}
	// A permissions violation on subject cancels ctx with its error as cause.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	defer c.track(subject, stop)()
	var giveUp time.Time
	backoff := 20 * time.Millisecond
	// A retried (idempotent) request waits a second for its first answer,
	// then twice as long each time up to the request timeout: a request
	// lost with a broker that died (one taken by a leader just killed) is
	// sent again soon after a standby takes over, and a slow broker is not
	// flooded.
	attempt := c.opts.requestTimeout
	if retry {
		attempt = min(time.Second, attempt)
	}
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		msg, err := c.nc.RequestWithContext(actx, subject, data)
		cancel()
		if err == nil && retry && msg.Header.Get(micro.ErrorCodeHeader) == "503" {
			// The broker is shutting down or could not persist: like no answer.
			err = nats.ErrNoResponders
		}
		if err == nil {
			if _, err := messages.Decode(msg.Data, reply); err != nil {
				return fmt.Errorf("%w: undecodable reply on %s: %v", ErrUnavailable, subject, err)
			}
			return nil
		}
		if denied := c.denied(ctx, subject, err); denied != nil {
			return denied
		}
		if ctx.Err() != nil {
			if giveUp.IsZero() && !errors.Is(err, nats.ErrNoResponders) {
				return ctxError(ctx)
			}
			return noAnswer(ctx, subject, err)
		}
		transient := errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !transient {
			return fmt.Errorf("%w: request on %s: %v", ErrUnavailable, subject, err)
		}
		if giveUp.IsZero() {
			giveUp = time.Now().Add(c.opts.retryFor)
		}
		if !retry || time.Now().After(giveUp) {
			return fmt.Errorf("%w: no slotbroker answered on %s (%v): is the broker running with prefix %q?", ErrUnavailable, subject, err, c.subj.Prefix)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			if denied := c.denied(ctx, subject, err); denied != nil {
				return denied
			}
			return noAnswer(ctx, subject, err)
		}
		backoff = min(backoff*2, time.Second)
		attempt = min(2*attempt, c.opts.requestTimeout)
	}
}

// noAnswer is the error of a call whose ctx ended while no broker answered:
// it matches ctx's error (ErrTimeout, context.Canceled) and ErrUnavailable.
func noAnswer(ctx context.Context, subject string, err error) error {
	return fmt.Errorf("%w (%w: no slotbroker answered on %s: %v)", ctxError(ctx), ErrUnavailable, subject, err)
}

// ctxError maps an ended context to ErrTimeout or its cause.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ctx.Err()
}

// checkName validates a limit name locally, as the broker would.
func checkName(name string) error {
	if e := messages.ValidateName(name); e != nil {
		return fromWire(e)
	}
	return nil
}

func joinNames(names []string) string { return strings.Join(names, ",") }
