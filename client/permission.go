package client

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"

	"github.com/nats-io/nats.go"
)

// A NATS server answers a publish or subscription its user may not make
// with an asynchronous -ERR naming the subject, nothing else: a request to
// a denied subject would only time out. The Client chains its own handler
// to the connection's async error handler, ends the calls in flight on a
// denied subject at once, and checks its grant subscription in New.

var (
	publishViolation   = regexp.MustCompile(`(?i)permissions violation for publish to "([^"]*)"`)
	subscribeViolation = regexp.MustCompile(`(?i)permissions violation for subscription to "([^"]*)"`)
)

// handlerMu makes reading and replacing a connection's async error handler
// one step among the Clients of this package.
var handlerMu sync.Mutex

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

// watchErrors chains the Client's handler before nc's async error handler,
// which still gets every error. The Client's part does nothing after Close.
func (c *Client) watchErrors() {
	handlerMu.Lock()
	defer handlerMu.Unlock()
	prev := c.nc.ErrorHandler()
	c.nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		c.onAsyncError(err)
		if prev != nil {
			prev(nc, sub, err)
		}
	})
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
