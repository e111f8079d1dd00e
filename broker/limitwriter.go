package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// Limit records are written by group commit: at most one write per limit is
// in flight, and every change made meanwhile waits for one more write of the
// then-current record. Each caller is answered only once its change is
// covered by a stored record.
//
// A rate limit's record stores a decay state reserved ahead of the live one
// (see reservedTAT): a quarter of the limit more than is taken, at most a full
// bucket. An admission that the last stored record already covers (same
// configuration, live TAT not past the stored one) needs no write at all; only
// one that outruns the reservation waits for the next write. A crashed broker
// thus restarts with at most the reserve more slots taken than were: it may
// refuse a little too long, never admit too much. Stop stores the exact state.

// reserveShare is the share of a rate limit reserved ahead in its record.
const reserveShare = 0.25

// ackGroup is one write that several batches wait for.
type ackGroup struct {
	done chan struct{}
	err  error
}

func newAckGroup() *ackGroup { return &ackGroup{done: make(chan struct{})} }

// ok tells, without waiting, whether the group's write is stored.
func (g *ackGroup) ok() bool {
	select {
	case <-g.done:
		return g.err == nil
	default:
		return false
	}
}

// limitWriter is the write state of one limit record.
type limitWriter struct {
	inflight bool
	// next collects the changes made while a write was in flight.
	next *ackGroup
	// purge (with purgeMsg) is a delete of the record waiting for the write
	// in flight: a write the JetStream client re-sends after meeting no
	// responders must not land after the purge and bring the limit back.
	purge    *ackGroup
	purgeMsg *nats.Msg
	// last is the latest write sent (in flight or stored); nil once it failed.
	last *sentLimit
}

// sentLimit is what one write of a limit record stores.
type sentLimit struct {
	ls  *limitState // the limit it was written for: a recreated limit is another
	cfg messages.Limit
	tat time.Time
	g   *ackGroup
}

// covers tells whether the record sent stores ls as it is now, or more
// conservatively (a later decay state) by no more than a write now would
// reserve: after slots were given back (a declined grant), the record is
// written again so that a crash does not keep them.
func (s *sentLimit) covers(now time.Time, ls *limitState) bool {
	return s.ls == ls && s.cfg == ls.cfg && !ls.bucket.tat.After(s.tat) && !s.tat.After(ls.reservedTAT(now))
}

// reservedTAT is the decay state to store for ls at now: the reserve taken
// on top of the live state (or of an empty bucket), never beyond a full
// bucket nor below the live state. A limit never used stores none.
func (ls *limitState) reservedTAT(now time.Time) time.Time {
	tat, d := ls.bucket.tat, ls.cfg.SlotDecayPerSecond
	if d <= 0 || tat.IsZero() {
		return tat
	}
	base := tat
	if base.Before(now) {
		base = now
	}
	r := base.Add(seconds(float64(ls.cfg.Limit) * reserveShare / d))
	if full := now.Add(seconds(float64(ls.cfg.Limit) / d)); r.After(full) {
		r = full
	}
	if r.Before(tat) {
		r = tat
	}
	return r
}

// markDirty returns the write that stores name's current record: the last
// one sent when it covers the current state, else a new one, started when
// none is in flight. b.mu must be held.
func (b *Broker) markDirty(name string) *ackGroup {
	lw := b.writers[name]
	if lw == nil {
		lw = &limitWriter{}
		b.writers[name] = lw
	}
	if ls := b.st.limits[name]; ls != nil && lw.last != nil && lw.last.covers(b.now(), ls) {
		return lw.last.g
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

// writeLimit publishes name's current record for g, with the decay state
// reserved ahead. b.mu must be held.
func (b *Broker) writeLimit(name string, lw *limitWriter, g *ackGroup) {
	ls := b.st.limits[name]
	if ls == nil {
		// Deleted since: its purge was written in order; nothing to store.
		close(g.done)
		delete(b.writers, name)
		return
	}
	rec := limitRecord{Limit: ls.cfg, TAT: ls.reservedTAT(b.now())}
	m := nats.NewMsg(b.kvSubject + limitKey(name))
	m.Data = mustJSON(rec)
	b.sendLimit(name, lw, m, g, &sentLimit{ls: ls, cfg: ls.cfg, tat: rec.TAT, g: g})
}

// purgeLimit sends the purge m of name's record once no write of it is in
// flight, and returns the group that is done when the purge is stored.
// b.mu must be held.
func (b *Broker) purgeLimit(name string, m *nats.Msg) *ackGroup {
	lw := b.writers[name]
	if lw == nil {
		lw = &limitWriter{}
		b.writers[name] = lw
	}
	if lw.inflight {
		if lw.purge == nil {
			lw.purge = newAckGroup()
		}
		lw.purgeMsg = m
		return lw.purge
	}
	g := newAckGroup()
	b.sendLimit(name, lw, m, g, nil)
	return g
}

// sendLimit publishes m, a write (sent describes it) or a purge (sent nil)
// of name's record, for g; when it is stored it sends the purge or the write
// that waited for it, purge first. b.mu must be held.
func (b *Broker) sendLimit(name string, lw *limitWriter, m *nats.Msg, g *ackGroup, sent *sentLimit) {
	lw.last = sent // a purge covers nothing
	f, err := b.js.PublishMsgAsync(m)
	if err != nil {
		lw.last = nil
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
		b.mu.Lock()
		defer b.mu.Unlock()
		if g.err != nil && sent != nil && lw.last == sent {
			lw.last = nil
		}
		close(g.done)
		lw.inflight = false
		switch {
		case lw.purge != nil:
			pg, pm := lw.purge, lw.purgeMsg
			lw.purge, lw.purgeMsg = nil, nil
			b.sendLimit(name, lw, pm, pg, nil)
		case lw.next != nil:
			next := lw.next
			lw.next = nil
			b.writeLimit(name, lw, next)
		}
		b.forgetWriter(name)
	}()
}

// storeExact writes, at Stop, the exact decay state of every limit written
// since Start unless its last write stored exactly that, so that a clean
// restart loses no slots. It returns the writes' futures and the errors of
// those it could not send. b.mu must be held and no write may be in flight.
func (b *Broker) storeExact() ([]jetstream.PubAckFuture, error) {
	var fs []jetstream.PubAckFuture
	var errs error
	for name, lw := range b.writers {
		ls := b.st.limits[name]
		if ls == nil {
			continue
		}
		if s := lw.last; s != nil && s.ls == ls && s.cfg == ls.cfg && s.tat.Equal(ls.bucket.tat) && s.g.ok() {
			continue
		}
		m := nats.NewMsg(b.kvSubject + limitKey(name))
		m.Data = ls.record()
		f, err := b.js.PublishMsgAsync(m)
		if err != nil {
			errs = errors.Join(errs, fmt.Errorf("%w: store limit %q's exact state: %v", ErrStore, name, err))
			continue
		}
		fs = append(fs, f)
	}
	return fs, errs
}

// forgetWriter drops the write state of a deleted limit once no write of it
// is in flight. b.mu must be held.
func (b *Broker) forgetWriter(name string) {
	if lw := b.writers[name]; lw != nil && !lw.inflight && lw.next == nil && b.st.limits[name] == nil {
		delete(b.writers, name)
	}
}

// wait blocks until the group's write is stored, and returns its error.
func (g *ackGroup) wait() error {
	<-g.done
	return g.err
}
