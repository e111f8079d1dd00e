package client

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"sync"
	"weak"

	"github.com/nats-io/nats.go"
)

// A NATS server answers a publish or subscription its user may not make
// with an asynchronous -ERR naming the subject, nothing else: a request to
// a denied subject would only time out. One dispatcher per connection,
// chained before the connection's async error handler, passes each error to
// the connection's open Clients; a Client ends its calls in flight on a
// denied subject at once, checks its grant subscription in New, and checks
// that the server let its first acceptance of a grant through.

var (
	publishViolation   = regexp.MustCompile(`(?i)permissions violation for publish to "([^"]*)"`)
	subscribeViolation = regexp.MustCompile(`(?i)permissions violation for subscription to "([^"]*)"`)
)

// dispatchers maps each connection that Clients were made on, by a weak
// pointer (so that the map keeps no connection alive), to its dispatcher.
// dispatchersMu also makes reading and replacing a connection's async error
// handler one step among the Clients of this package.
var (
	dispatchersMu sync.Mutex
	dispatchers   = map[weak.Pointer[nats.Conn]]*dispatcher{}
)

// dispatcher passes a connection's async errors to the Clients open on it.
// It is chained once before the connection's handler, by the connection's
// first Client, and stays chained: Clients register in New and leave in
// Close (or when the connection closes), so that Clients made and closed on
// one long-lived connection do not pile up on it. It holds no reference to
// the connection or its previous handler, which only the chained closure
// (kept by the connection) holds.
type dispatcher struct {
	mu      sync.Mutex
	clients map[*Client]struct{}
}

// register chains c's connection's dispatcher, the first time, and adds c to it.
func (c *Client) register() {
	key := weak.Make(c.nc)
	dispatchersMu.Lock()
	defer dispatchersMu.Unlock()
	d := dispatchers[key]
	if d == nil {
		d = &dispatcher{clients: map[*Client]struct{}{}}
		prev := c.nc.ErrorHandler()
		c.nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			d.dispatch(err)
			if prev != nil {
				prev(nc, sub, err)
			}
		})
		dispatchers[key] = d
		// The entry goes with its connection: at the latest when the
		// connection is collected (the key is all the cleanup holds).
		runtime.AddCleanup(c.nc, dropDispatcher, key)
	}
	d.mu.Lock()
	d.clients[c] = struct{}{}
	d.mu.Unlock()
	c.disp = d
}

// unregister removes c from its connection's dispatcher; when it was the
// last Client and the connection is closed for good, the entry is dropped
// then instead of when the connection is collected. Safe to call more than
// once.
func (c *Client) unregister() {
	d := c.disp
	if d == nil {
		return
	}
	d.mu.Lock()
	delete(d.clients, c)
	empty := len(d.clients) == 0
	d.mu.Unlock()
	if empty && c.nc.IsClosed() {
		key := weak.Make(c.nc)
		dispatchersMu.Lock()
		if dispatchers[key] == d {
			d.mu.Lock()
			if len(d.clients) == 0 {
				delete(dispatchers, key)
			}
			d.mu.Unlock()
		}
		dispatchersMu.Unlock()
	}
}

// dropDispatcher forgets the dispatcher of a collected connection.
func dropDispatcher(key weak.Pointer[nats.Conn]) {
	dispatchersMu.Lock()
	delete(dispatchers, key)
	dispatchersMu.Unlock()
}

// dispatch passes err to every Client registered.
func (d *dispatcher) dispatch(err error) {
	d.mu.Lock()
	clients := make([]*Client, 0, len(d.clients))
	for c := range d.clients {
		clients = append(clients, c)
	}
	d.mu.Unlock()
	for _, c := range clients {
		c.onAsyncError(err)
	}
}

// permissionError is a publish or subscription the NATS server refused.
// It matches ErrPermissionDenied and nats.ErrPermissionViolation.
type permissionError struct {
	msg   string
	cause error
}

func (e *permissionError) Error() string   { return "slotbroker: permission denied: " + e.msg }
func (e *permissionError) Unwrap() []error { return []error{ErrPermissionDenied, e.cause} }

// publishDenied is the error of a call whose subject the user may not publish to.
func publishDenied(subject string, cause error) error {
	return &permissionError{cause: cause, msg: fmt.Sprintf(
		"the NATS user lacks publish permission on %q: the server refused the request (grant the subject in the user's publish permissions)", subject)}
}

// violated returns the subject a permissions violation of re's kind names.
func violated(err error, re *regexp.Regexp) (string, bool) {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return "", false
	}
	m := re.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	return m[1], true
}

// flight is a call in flight; cancel ends it with a cause.
type flight struct {
	cancel context.CancelCauseFunc
}

// track registers a call in flight on subject and returns its removal.
func (c *Client) track(subject string, cancel context.CancelCauseFunc) func() {
	f := &flight{cancel: cancel}
	c.flightsMu.Lock()
	fs := c.flights[subject]
	if fs == nil {
		fs = map[*flight]struct{}{}
		c.flights[subject] = fs
	}
	fs[f] = struct{}{}
	c.flightsMu.Unlock()
	return func() {
		c.flightsMu.Lock()
		delete(fs, f)
		if len(fs) == 0 { // still c.flights[subject]: f was in it until now
			delete(c.flights, subject)
		}
		c.flightsMu.Unlock()
	}
}

// onAsyncError ends the calls in flight on a subject the server refused to
// let this user publish to, and notes a refused grant subscription.
func (c *Client) onAsyncError(err error) {
	if c.errorsOff.Load() {
		return
	}
	if subject, ok := violated(err, publishViolation); ok {
		denied := publishDenied(subject, err)
		c.flightsMu.Lock()
		for f := range c.flights[subject] {
			f.cancel(denied)
		}
		c.flightsMu.Unlock()
		return
	}
	if subject, ok := violated(err, subscribeViolation); ok && subject == c.inbox+"*" {
		if !c.inboxDenied.Swap(true) && c.started.Load() {
			// After New: permissions changed under a live connection.
			c.log.Warn("slotbroker: the NATS server refused the subscription to the grant inbox; queued acquisitions cannot be granted",
				"subject", subject, "err", err)
		}
	}
}

// denied returns the permission error of a call on subject that failed with
// err: ctx was cancelled by a permissions violation, or (should the
// handler not have run yet) the request timed out and the connection's last
// error is a violation on subject. Otherwise nil.
func (c *Client) denied(ctx context.Context, subject string, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrPermissionDenied) {
		return cause
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return nil
	}
	last := c.nc.LastError()
	if s, ok := violated(last, publishViolation); ok && s == subject {
		return publishDenied(subject, last)
	}
	return nil
}

// checkInbox makes sure the server took the grant subscription: it flushes
// (when connected) and reports a refusal as ErrPermissionDenied.
func (c *Client) checkInbox() error {
	if !c.nc.IsConnected() {
		return nil // checked by nothing: the subscription is sent on connect
	}
	if err := c.nc.FlushTimeout(c.opts.requestTimeout); err != nil {
		return nil // the server answers the subscription before the flush's PONG
	}
	// The server sends the -ERR before the PONG: LastError has it now, while
	// the handler may not have run yet.
	s, ok := violated(c.nc.LastError(), subscribeViolation)
	if !c.inboxDenied.Load() && !(ok && s == c.inbox+"*") {
		return nil
	}
	return &permissionError{cause: nats.ErrPermissionViolation, msg: fmt.Sprintf(
		"subscribe to %s* denied: connect with nats.CustomInboxPrefix set to the inbox prefix your user may subscribe to", c.inbox)}
}
