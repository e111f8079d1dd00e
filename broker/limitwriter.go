package broker

import (
	"github.com/nats-io/nats.go"
)

// Limit records are written by group commit: at most one write per limit is
// in flight, and every change made meanwhile waits for one more write of the
// then-current record. Under load (a hot rate limit admits thousands of
// callers a second) this turns one write per admission into one write per
// round trip to JetStream, and each caller is still answered only once its
// change is stored.

// ackGroup is one write that several batches wait for.
type ackGroup struct {
	done chan struct{}
	err  error
}

func newAckGroup() *ackGroup { return &ackGroup{done: make(chan struct{})} }

// limitWriter is the write state of one limit record.
type limitWriter struct {
	inflight bool
	// next collects the changes made while a write was in flight.
	next *ackGroup
}

// markDirty returns the write that will store name's current record,
// starting it when none is in flight. b.mu must be held.
func (b *Broker) markDirty(name string) *ackGroup {
	lw := b.writers[name]
	if lw == nil {
		lw = &limitWriter{}
		b.writers[name] = lw
	}
	if lw.inflight {
		if lw.next == nil {
			lw.next = newAckGroup()
		}
		return lw.next
	}
	g := newAckGroup()
	b.writeLimit(name, lw, g)
	return g
}

// writeLimit publishes name's current record for g. b.mu must be held.
func (b *Broker) writeLimit(name string, lw *limitWriter, g *ackGroup) {
	ls := b.st.limits[name]
	if ls == nil {
		// Deleted since: its purge was written in order; nothing to store.
		close(g.done)
		delete(b.writers, name)
		return
	}
	m := nats.NewMsg(b.kvSubject + limitKey(name))
	m.Data = ls.record()
	f, err := b.js.PublishMsgAsync(m)
	if err != nil {
		g.err = err
		close(g.done)
		return
	}
	lw.inflight = true
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		select {
		case <-f.Ok():
		case err := <-f.Err():
			g.err = err
		}
		close(g.done)
		b.mu.Lock()
		defer b.mu.Unlock()
		lw.inflight = false
		if next := lw.next; next != nil {
			lw.next = nil
			b.writeLimit(name, lw, next)
		}
	}()
}

// wait blocks until the group's write is stored, and returns its error.
func (g *ackGroup) wait() error {
	<-g.done
	return g.err
}
