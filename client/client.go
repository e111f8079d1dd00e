package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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
	waits map[string]chan messages.Grant
	// accepted maps the wait ids of held leases to their lease ids, so that a
	// grant pushed again (after a broker restart) is accepted, not declined.
	accepted map[string]string
	leases   map[*Lease]struct{}
	closed   bool

	// tries coalesces concurrent TryRateLimit calls (coalesce.go).
	tries tryBatcher
	// blocks coalesces concurrent RateLimit calls (coalesce_block.go).
	blocks blockBatcher
	// onRateCall, set only by tests, runs when a RateLimit call has taken
	// its place in its key's order.
	onRateCall func()
}

// New returns a Client on nc. It subscribes to one inbox for pushed grants.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nats connection is nil", ErrInvalidArgument)
	}
	o := options{prefix: messages.DefaultPrefix, log: slog.Default(), requestTimeout: 5 * time.Second, retryFor: 30 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	c := &Client{nc: nc, opts: o, subj: messages.NewSubjects(o.prefix), log: o.log,
		inbox: nc.NewInbox() + ".", waits: map[string]chan messages.Grant{}, accepted: map[string]string{}, leases: map[*Lease]struct{}{}}
	sub, err := nc.Subscribe(c.inbox+"*", c.onGrant)
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe to grants: %v", ErrUnavailable, err)
	}
	c.sub = sub
	c.gone = make(chan struct{})
	var end context.CancelFunc
	c.life, end = context.WithCancel(context.Background())
	// Called once when the subscription's delivery ends: unsubscribed, or
	// its connection closed.
	var once sync.Once
	sub.SetClosedHandler(func(string) {
		once.Do(func() {
			close(c.gone)
			end()
		})
	})
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
	leases := make([]*Lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	c.mu.Unlock()
	for _, l := range leases {
		l.abandon()
	}
	err := c.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}

// onGrant answers a pushed grant: accepted when its wait is still current,
// declined otherwise (the caller gave up), so the broker passes it on.
func (c *Client) onGrant(m *nats.Msg) {
	var g messages.Grant
	enc, err := messages.Decode(m.Data, &g)
	if err != nil {
		c.log.Warn("slotbroker: undecodable grant", "err", err)
		return
	}
	c.mu.Lock()
	ch, ok := c.waits[g.WaitID]
	if ok {
		delete(c.waits, g.WaitID)
		if g.Lease != nil {
			c.accepted[g.WaitID] = g.Lease.ID
		}
	}
	again := !ok && g.Lease != nil && c.accepted[g.WaitID] == g.Lease.ID
	c.mu.Unlock()
	if ok && g.Lease != nil {
		// The broker starts the lease's clock when it has this acceptance.
		g.Lease.ExpiresAt = time.Now().Add(time.Duration(g.Lease.TTLMillis) * time.Millisecond)
	}
	if m.Reply != "" {
		if data, err := messages.Marshal(enc, messages.GrantAck{Accept: ok || again}); err == nil {
			_ = m.Respond(data)
		}
	}
	if ok {
		ch <- g
	}
}

// expectWait registers a wait id for a pushed grant.
func (c *Client) expectWait(id string) (chan messages.Grant, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	ch := make(chan messages.Grant, 1)
	c.waits[id] = ch
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
// it retries while no broker answers, up to the retry window and ctx.
func (c *Client) call(ctx context.Context, subject string, req, reply any, retry bool) error {
	data, err := messages.Marshal(messages.Msgpack, req)
	if err != nil {
		return fmt.Errorf("%w: encode request: %v", ErrInvalidArgument, err)
	}
	var giveUp time.Time
	backoff := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, c.opts.requestTimeout)
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
			return noAnswer(ctx, subject, err)
		}
		backoff = min(backoff*2, time.Second)
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
