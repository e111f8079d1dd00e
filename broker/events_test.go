package broker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// WithEventRetention takes 0 (off) or 1s to 30 days.
func TestWithEventRetentionBounds(t *testing.T) {
	nc := &nats.Conn{} // New only checks options; it does not use the connection
	for _, d := range []time.Duration{-time.Second, time.Millisecond, 999 * time.Millisecond, MaxEventRetention + time.Second} {
		if _, err := New(nc, WithEventRetention(d)); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "event retention") {
			t.Errorf("WithEventRetention(%v): %v, want ErrConfig naming it", d, err)
		}
	}
	for _, d := range []time.Duration{0, time.Second, time.Hour, MaxEventRetention} {
		var o options
		if err := WithEventRetention(d)(&o); err != nil || o.eventRetention != d {
			t.Errorf("WithEventRetention(%v): %v, retention %v", d, err, o.eventRetention)
		}
	}
}
