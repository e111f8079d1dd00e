package integration

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestEventsKeptWithRetention: with WithEventRetention the broker keeps its
// events in SLOTBROKER_EVENTS_<bucket>, configured as documented, although
// nobody subscribed when they were published (the embedded broker's interest
// filter is off then): a reader that comes later finds them, in order.
func TestEventsKeptWithRetention(t *testing.T) {
	ev := newEnv(t, broker.WithEventRetention(time.Hour))
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "kept", 1); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, "kept", 1, client.WithHolder("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	name := broker.EventStream(messages.DefaultBucket)
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxAge != time.Hour || cfg.Discard != jetstream.DiscardOld || cfg.Storage != jetstream.FileStorage ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != messages.DefaultPrefix+".v1.events.>" {
		t.Errorf("stream config: max age %v, discard %v, storage %v, subjects %v", cfg.MaxAge, cfg.Discard, cfg.Storage, cfg.Subjects)
	}
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ev.e.Broker.Subjects().Events("kept")},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The events are published after the replies: read until the release's
	// available is there (the fetch waits for it), in the stream's order.
	var kinds []string
	for len(kinds) == 0 || kinds[len(kinds)-1] != messages.EventAvailable {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("after %v: %v", kinds, err)
		}
		var e messages.Event
		if _, err := messages.Decode(m.Data(), &e); err != nil {
			t.Fatal(err)
		}
		if m.Subject() != ev.e.Broker.Subjects().Event(e.Limit, e.Kind) || e.Limit != "kept" {
			t.Fatalf("event %+v on %s", e, m.Subject())
		}
		if e.Kind == messages.EventAcquired && e.Holder != "alice" {
			t.Errorf("acquired event holder %q, want alice", e.Holder)
		}
		kinds = append(kinds, e.Kind)
	}
	want := []string{messages.EventCreated, messages.EventAcquired, messages.EventReleased, messages.EventAvailable}
	if !slices.Equal(kinds, want) {
		t.Errorf("kept events %v, want %v", kinds, want)
	}
}

// TestEventsNotKeptByDefault: without WithEventRetention there is no events stream.
func TestEventsNotKeptByDefault(t *testing.T) {
	ev := newEnv(t)
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.Stream(ctxT(t, 10*time.Second), broker.EventStream(messages.DefaultBucket))
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("events stream lookup: %v, want not found", err)
	}
}
