package integration

import (
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
)

// TestClosedClientsDoNotPileUpOnTheConnection: client.New chains a handler
// in front of the connection's async error handler (to turn permission
// violations into ErrPermissionDenied), and Close leaves it chained
// ("passing errors on only", client/permission.go watchErrors). A service
// that makes a Client per job or per request on one long-lived connection,
// and closes it, therefore adds one closure per Client, each keeping its
// closed Client reachable: memory grows without bound, and every async error
// of the connection (a slow consumer, a permissions violation) runs through
// one more call frame per Client ever made, until the stack gives out.
func TestClosedClientsDoNotPileUpOnTheConnection(t *testing.T) {
	ev := newEnv(t)
	nc := ev.conn()
	depths := make(chan int, 16)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		pcs := make([]uintptr, 1<<16)
		depths <- runtime.Callers(0, pcs)
	})
	// asyncErrorDepth makes the connection report a slow consumer and
	// returns the depth of the stack its error handler runs on.
	asyncErrorDepth := func() int {
		t.Helper()
		block := make(chan struct{})
		sub, err := nc.Subscribe(nc.NewInbox(), func(*nats.Msg) { <-block })
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.SetPendingLimits(1, 1<<20); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if err := nc.Publish(sub.Subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		defer func() { close(block); _ = sub.Unsubscribe() }()
		select {
		case d := <-depths:
			return d
		case <-time.After(30 * time.Second):
			t.Fatal("no slow consumer error reported")
			return 0
		}
	}

	newAndClose := func(n int) {
		for range n {
			c, err := client.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	newAndClose(1)
	before := asyncErrorDepth()
	const clients = 2000
	newAndClose(clients)
	after := asyncErrorDepth()
	if after-before > 100 {
		t.Errorf("after %d more Clients were made and closed on the connection, its async error handler runs %d frames deep, %d before: the closed Clients' handlers stay chained",
			clients, after, before)
	}
}
