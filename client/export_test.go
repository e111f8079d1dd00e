package client

import (
	"weak"

	"github.com/nats-io/nats.go"
)

// SetRateCallHook makes f run each time a RateLimit call of c takes its
// place in its key's order (under the coalescer's lock).
func SetRateCallHook(c *Client, f func()) { c.onRateCall = f }

// Dispatchers counts the connections that have an async error dispatcher
// in the package's registry.
func Dispatchers() int {
	dispatchersMu.Lock()
	defer dispatchersMu.Unlock()
	return len(dispatchers)
}

// HasDispatcher reports whether nc has an async error dispatcher in the
// package's registry.
func HasDispatcher(nc *nats.Conn) bool {
	dispatchersMu.Lock()
	defer dispatchersMu.Unlock()
	return dispatchers[weak.Make(nc)] != nil
}

// TryCallsWaiting counts the TryRateLimit calls of c that wait behind a
// request of their key in flight, to go in the next counted request.
func TryCallsWaiting(c *Client) int {
	c.tries.mu.Lock()
	defer c.tries.mu.Unlock()
	n := 0
	for _, q := range c.tries.qs {
		n += len(q.waiting)
	}
	return n
}
