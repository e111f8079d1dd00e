package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// subjects are the default deployment's subjects.
var subjects = messages.NewSubjects("")

// rawCall sends req to subject on nc as msgpack and decodes the reply.
func rawCall(nc *nats.Conn, subject string, req, reply any) error {
	data, err := messages.Marshal(messages.Msgpack, req)
	if err != nil {
		return err
	}
	m, err := nc.Request(subject, data, 30*time.Second)
	if err != nil {
		return fmt.Errorf("request %s: %w", subject, err)
	}
	_, err = messages.Decode(m.Data, reply)
	return err
}

// rawAcquire sends one acquisition without the client library (no lease
// object, no renewals), for the bulk set-ups of d, f and g. The reply must
// be granted, or queued when wantQueued.
func rawAcquire(nc *nats.Conn, name string, req *messages.AcquireRequest, wantQueued bool) (*messages.AcquireReply, error) {
	var reply messages.AcquireReply
	if err := rawCall(nc, subjects.Verb(messages.VerbAcquire, name), req, &reply); err != nil {
		return nil, err
	}
	if reply.Error != nil {
		return nil, fmt.Errorf("acquire %s: %v", name, reply.Error)
	}
	want := messages.StatusGranted
	if wantQueued {
		want = messages.StatusQueued
	}
	if reply.Status != want {
		return nil, fmt.Errorf("acquire %s: status %q, want %q", name, reply.Status, want)
	}
	return &reply, nil
}

// flood runs fn(i) for i in [0, n) on workers goroutines; worker w gets
// conns[w%len(conns)]. It stops at the first error.
func flood(ctx context.Context, conns []*nats.Conn, n, workers int, fn func(nc *nats.Conn, i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := conns[w%len(conns)]
			for !failed.Load() && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(nc, i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
