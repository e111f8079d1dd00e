package integration

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
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
	// The brokers' periodic writes (lease renewals, status keys: a publish
	// counted once: the server's acknowledgement is not a client's message) are counted out.
	var housekeeping atomic.Int64
	hk, err := ev.conn().Subscribe("$KV.>", func(m *nats.Msg) {
		if brokerHousekeeping(m.Subject) {
			housekeeping.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hk.Unsubscribe() }()
	inMsgs := func() int64 {
		v, err := ev.e.Server.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v.InMsgs - housekeeping.Load()
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
	// Exactly 3 events a cycle are published only when watched; a
	// periodic write of the brokers can fall either side of a window's
	// edge, so 2 messages of slack (without the filter the difference would
	// be about 0, not 60).
	if watched-unwatched < 3*cycles-2 {
		t.Fatalf("messages into the server: %d unwatched, %d watched; want at least %d fewer unwatched (no events)", unwatched, watched, 3*cycles)
	}
	t.Logf("messages into the server for %d cycles: %d unwatched, %d watched", cycles, unwatched, watched)
}

// The events of one change are published in the order they happened: a
// release before the acquisition its freed slot allows, and a limit's
// changed event before the acquisitions a raised limit allows.
func TestEventsReleasedAndChangedBeforeTheAcquiredTheyCause(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "order", 1); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	got := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(ev.e.Broker.Subjects().Events("order"), got)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// next returns the next event that is not "available".
	next := func() messages.Event {
		t.Helper()
		for {
			select {
			case m := <-got:
				var e messages.Event
				if err := json.Unmarshal(m.Data, &e); err != nil {
					t.Fatal(err)
				}
				if e.Kind != messages.EventAvailable {
					return e
				}
			case <-ctx.Done():
				t.Fatal("no event within 30s")
			}
		}
	}
	// queue starts an Acquire and returns once it is queued.
	queue := func(holder string) <-chan *client.Lease {
		t.Helper()
		queued, leased := make(chan struct{}), make(chan *client.Lease, 1)
		go func() {
			l, err := c.Acquire(ctx, "order", 1, client.WithHolder(holder), client.WithQueued(func(client.Queued) { close(queued) }))
			if err != nil {
				t.Error(err)
			}
			leased <- l
		}()
		select {
		case <-queued:
		case <-ctx.Done():
			t.Fatalf("%s was not queued", holder)
		}
		return leased
	}
	want := func(kind, holder string) messages.Event {
		t.Helper()
		e := next()
		if e.Kind != kind || e.Holder != holder {
			t.Fatalf("event %s of %q (available %d), want %s of %q", e.Kind, e.Holder, e.Available, kind, holder)
		}
		return e
	}

	first, err := c.Acquire(ctx, "order", 1, client.WithHolder("first"))
	if err != nil {
		t.Fatal(err)
	}
	want(messages.EventAcquired, "first")
	second := queue("second")
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if e := want(messages.EventReleased, "first"); e.Available != 1 {
		t.Fatalf("released: available %d, want 1 (the slot it freed, before the grant it allows)", e.Available)
	}
	want(messages.EventAcquired, "second")
	<-second

	third, fourth := queue("third"), queue("fourth")
	three := 3
	if _, err := c.UpdateLimit(ctx, "order", client.LimitUpdate{Limit: &three}); err != nil {
		t.Fatal(err)
	}
	if e := want(messages.EventChanged, ""); e.Config == nil || e.Config.Limit != 3 || e.Available != 2 {
		t.Fatalf("changed: %+v, want limit 3 and available 2", e)
	}
	want(messages.EventAcquired, "third")
	want(messages.EventAcquired, "fourth")
	<-third
	<-fourth
}
