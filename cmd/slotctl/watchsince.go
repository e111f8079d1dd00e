package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// errEventsNotKept is watch --since's message when no stream keeps the events.
const errEventsNotKept = "events are not kept: start slotbroker with --event-retention 1h to replay them"

// watchStream calls fn with the events on name (every limit's when "")
// kept by the broker's events stream (SLOTBROKER_EVENTS_<bucket>, found by
// its subjects) from since ago, in order, then with the new ones as the
// stream receives them, until ctx ends or nc closes. Reading one ordered
// consumer throughout, it neither misses nor repeats an event between the
// past and the live ones, nor across a reconnection while the stream
// still holds them.
func watchStream(ctx context.Context, nc *nats.Conn, prefix, name string, since time.Duration, fn func(client.Event)) error {
	filter := messages.NewSubjects(prefix).Events(name)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("%w: %v", client.ErrUnavailable, err)
	}
	stream, err := js.StreamNameBySubject(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return &msgError{msg: errEventsNotKept, kind: client.ErrUnavailable}
	case errors.Is(err, context.Canceled):
		return err
	case err != nil:
		return fmt.Errorf("%w: find the stream keeping the events on %s: %v", client.ErrUnavailable, filter, err)
	}
	start := time.Now().Add(-since)
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: read the events stream %s: %v", client.ErrUnavailable, stream, err)
	}
	closed := make(chan struct{})
	closedCh := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closedCh)
	go func() {
		if _, ok := <-closedCh; ok {
			close(closed)
		}
	}()
	// fn is not called once watchStream returns: a callback may still run
	// after Stop.
	var mu sync.Mutex
	stopped := false
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		var ev client.Event
		if _, err := messages.Decode(m.Data(), &ev); err == nil {
			fn(ev)
		}
	})
	if err != nil {
		return fmt.Errorf("%w: read the events stream %s: %v", client.ErrUnavailable, stream, err)
	}
	defer func() {
		cc.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}()
	if nc.IsClosed() {
		return fmt.Errorf("%w: the NATS connection was closed while watching", client.ErrClosed)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
		return fmt.Errorf("%w: the NATS connection was closed while watching", client.ErrClosed)
	}
}
