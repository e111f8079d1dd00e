package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// floor measures what slotbroker is built on: a NATS request-reply echo and
// a JetStream KV put, both on the slotbroker process's own server (another
// process, as clients see it) and on an embedded server in the bench process.
func floor(ctx context.Context, e *env) error {
	cfg := e.cfg
	var err error
	if e.echoRemote, err = echo(ctx, cfg, e.sb.URL(), 1); err != nil {
		return err
	}
	r := statRow("floor", "NATS echo req-reply, 1 client", "nats (slotbroker's server, other process)", e.echoRemote)
	e.rep.add(r)
	if e.pingBroker, err = pingBroker(ctx, cfg, e.sb.URL(), 1); err != nil {
		return err
	}
	e.rep.add(statRow("floor", "request to the broker process that does no work ($SRV.PING), 1 client", "slotbroker process (micro ping)", e.pingBroker))
	if e.echoLocal, err = echo(ctx, cfg, e.floor.ClientURL(), 1); err != nil {
		return err
	}
	e.rep.add(statRow("floor", "NATS echo req-reply, 1 client", "nats (embedded in bench process)", e.echoLocal))
	for _, t := range []struct{ url, where string }{
		{e.sb.URL(), "slotbroker's server, other process"},
		{e.floor.ClientURL(), "embedded in bench process"},
	} {
		s, err := kvPut(ctx, cfg, t.url, 1)
		if err != nil {
			return err
		}
		e.rep.add(statRow("floor", "JetStream KV put (file, sync 1s), 1 client", "nats ("+t.where+")", s))
	}
	return nil
}

// echo measures a request-reply round trip with workers requesters over up
// to 8 connections; the responder is on its own connection in the bench process.
func echo(ctx context.Context, cfg config, url string, workers int) (stats, error) {
	conns, done, err := connect(url, 1+min(workers, 8), "slotbench-echo")
	if err != nil {
		return stats{}, err
	}
	defer done()
	subj := "slotbench.echo." + nats.NewInbox()[7:]
	sub, err := conns[0].Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return stats{}, err
	}
	defer sub.Unsubscribe()
	if err := conns[0].Flush(); err != nil {
		return stats{}, err
	}
	payload := []byte(strings.Repeat("x", 64))
	return loop(ctx, workers, cfg.warm, cfg.dur, func(ctx context.Context, w int) (bool, error) {
		_, err := conns[1+w%(len(conns)-1)].Request(subj, payload, 5*time.Second)
		return err == nil, err
	})
}

// pingBroker measures the cheapest round trip to the slotbroker process: a
// micro $SRV.PING, answered inside the broker without touching its state or
// the bucket. No slotbroker request can be faster; it is the transport's
// floor for a, b and e.
func pingBroker(ctx context.Context, cfg config, url string, workers int) (stats, error) {
	conns, done, err := connect(url, min(workers, 8), "slotbench-ping")
	if err != nil {
		return stats{}, err
	}
	defer done()
	subj := "$SRV.PING." + messages.ServiceName
	return loop(ctx, workers, cfg.warm, cfg.dur, func(ctx context.Context, w int) (bool, error) {
		_, err := conns[w%len(conns)].Request(subj, nil, 5*time.Second)
		return err == nil, err
	})
}

// kvPut measures a put to a file-backed KV bucket (about a lease record's
// size) by workers goroutines over up to 8 connections.
func kvPut(ctx context.Context, cfg config, url string, workers int) (stats, error) {
	conns, done, err := connect(url, min(workers, 8), "slotbench-kv")
	if err != nil {
		return stats{}, err
	}
	defer done()
	var kvs []jetstream.KeyValue
	var js jetstream.JetStream
	for _, nc := range conns {
		if js, err = jetstream.New(nc); err != nil {
			return stats{}, err
		}
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "slotbench_floor", History: 1, Storage: jetstream.FileStorage})
		if err != nil {
			return stats{}, fmt.Errorf("kv bucket: %w", err)
		}
		kvs = append(kvs, kv)
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), "slotbench_floor") }()
	val := []byte(strings.Repeat("v", 200))
	return loop(ctx, workers, cfg.warm, cfg.dur, func(ctx context.Context, w int) (bool, error) {
		_, err := kvs[w%len(kvs)].Put(ctx, fmt.Sprintf("k%d", w), val)
		return err == nil, err
	})
}
