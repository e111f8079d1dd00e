package client_test

import (
	"errors"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// TestWatchOnAClosedConnectionIsErrClosed: Watch on a client whose NATS
// connection is closed (before it subscribes, or while it flushes its
// subscription) says ErrClosed, as it does when the connection closes while
// it watches, not ErrUnavailable (which says to retry).
func TestWatchOnAClosedConnectionIsErrClosed(t *testing.T) {
	nc := connect(t, plainServer(t))
	c := clientOn(t, nc)
	nc.Close()
	if err := c.Watch(testContext(t), "", func(client.Event) {}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Watch on a closed connection: %v, want ErrClosed", err)
	}
}
