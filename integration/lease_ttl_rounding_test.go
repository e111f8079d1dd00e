package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestSubMillisecondLeaseTTLIsRefused: WithLeaseTTL says the broker refuses
// values outside its bounds (1 s to 24 h by default), and 500 ms is refused
// with ErrInvalidArgument. But the client sends ttl_ms = d.Milliseconds(),
// which truncates a TTL under 1 ms to 0, and 0 on the wire means "the
// broker's default": asked for 500 µs, the caller silently gets a 30 s lease
// (issue 10, point 5: "a lease with a TTL nobody asked for").
func TestSubMillisecondLeaseTTLIsRefused(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	c := ev.e.Client
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{500 * time.Millisecond, 500 * time.Microsecond, time.Nanosecond} {
		l, err := c.TryAcquire(ctx, "db", 1, client.WithLeaseTTL(ttl))
		if err == nil {
			t.Errorf("TryAcquire with WithLeaseTTL(%v): granted a lease expiring in %v; want ErrInvalidArgument",
				ttl, time.Until(l.ExpiresAt()).Round(time.Second))
			_ = l.Release(ctx)
			continue
		}
		if !errors.Is(err, client.ErrInvalidArgument) {
			t.Errorf("TryAcquire with WithLeaseTTL(%v): %v, want ErrInvalidArgument", ttl, err)
		}
	}
}
