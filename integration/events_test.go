package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// The embedded broker publishes events only when someone subscribes to them
// (broker.WithEventInterest): a watcher gets every event, and cycles nobody
// watches put fewer messages through the server.
func TestEventsOnlyWhenWatched(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "watched", 1); err != nil {
		t.Fatal(err)
	}
	inMsgs := func() int64 {
		v, err := ev.e.Server.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.InMsgs
	}
	const cycles = 20
	cycle := func() {
		for range cycles {
			l, err := c.Acquire(ctx, "watched", 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The release's purge is settled after its reply: wait for the server's
	// count to stop moving before and after each batch of cycles.
	settled := func() int64 {
		last := inMsgs()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			now := inMsgs()
			if now == last {
				return now
			}
			last = now
		}
		t.Fatal("the server's message count did not settle")
		return 0
	}

	n0 := settled()
	cycle()
	unwatched := settled() - n0

	nc := ev.conn()
	got := make(chan *nats.Msg, 4*cycles)
	sub, err := nc.ChanSubscribe(ev.e.Broker.Subjects().Events("watched"), got)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n1 := settled()
	cycle()
	watched := settled() - n1

	kinds := map[string]int{}
	for len(got) > 0 {
		var e messages.Event
		if err := json.Unmarshal((<-got).Data, &e); err != nil {
			t.Fatal(err)
		}
		kinds[e.Kind]++
	}
	for _, k := range []string{messages.EventAcquired, messages.EventReleased, messages.EventAvailable} {
		if kinds[k] != cycles {
			t.Fatalf("watcher got %v, want %d of %s", kinds, cycles, k)
		}
	}
	if watched-unwatched < 3*cycles {
		t.Fatalf("messages into the server: %d unwatched, %d watched; want at least %d fewer unwatched (no events)", unwatched, watched, 3*cycles)
	}
	t.Logf("messages into the server for %d cycles: %d unwatched, %d watched", cycles, unwatched, watched)
}
