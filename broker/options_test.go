package broker

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Every option refuses a bad argument with ErrConfig and a message naming it.
func TestOptionsRefuseBadArguments(t *testing.T) {
	nc := &nats.Conn{} // New only checks options; it does not use the connection
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithPrefix("a.b"), "prefix"},
		{WithBucket(""), "bucket"},
		{WithReplicas(0), "replicas"},
		{WithReplicas(6), "replicas"},
		{WithLeaseTTL(time.Second, 2*time.Second, time.Hour), "lease ttl"},
		{WithLeaseTTL(time.Minute, 500*time.Millisecond, time.Hour), "lease ttl"},
		{WithGrantTimeout(0), "grant timeout"},
		{WithReconnectGrace(-time.Second), "reconnect grace"},
		{WithLogger(nil), "logger"},
		{WithEventInterest(nil), "event interest"},
	} {
		_, err := New(nc, tc.opt)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with a bad %s option: %v, want ErrConfig naming it", tc.want, err)
		}
	}
	if _, err := New(nil); !errors.Is(err, ErrConfig) {
		t.Errorf("New(nil): %v, want ErrConfig", err)
	}
}
