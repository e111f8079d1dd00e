package client

// SetRateCallHook makes f run each time a RateLimit call of c takes its
// place in its key's order (under the coalescer's lock).
func SetRateCallHook(c *Client, f func()) { c.onRateCall = f }
