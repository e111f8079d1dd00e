package broker

import (
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// A limit's record is journaled when it changes: its configuration, and for
// a rate limit its decay state reserved ahead of the live one (see
// reservedTAT): a quarter of the limit more than is taken, at most a full
// bucket. An admission that the last journaled record already covers (same
// configuration, live TAT not past the stored one) needs no append at all;
// only one that outruns the reservation waits for the next append. A crashed
// broker thus restarts with at most the reserve more slots taken than were:
// it may refuse a little too long, never admit too much. Stop journals the
// exact state.

// reserveShare is the share of a rate limit reserved ahead in its record.
const reserveShare = 0.25

// ackGroup is one journal append that several changes wait for.
type ackGroup struct {
	done chan struct{}
	err  error
	// seq is the journal's last sequence once the append is stored.
	seq uint64
}

func newAckGroup() *ackGroup { return &ackGroup{done: make(chan struct{})} }

// doneGroup is a group that waits for nothing.
func doneGroup() *ackGroup {
	g := newAckGroup()
	close(g.done)
	return g
}

// ok tells, without waiting, whether the group's append is stored.
func (g *ackGroup) ok() bool {
	select {
	case <-g.done:
		return g.err == nil
	default:
		return false
	}
}

// wait blocks until the group's append is stored, and returns its error.
func (g *ackGroup) wait() error {
	<-g.done
	return g.err
}

// sentLimit is what the last journaled record of a limit stores.
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

// markDirty returns the append that stores name's current record: the last
// one sent when it covers the current state, else the pending one, with the
// record added to it. b.mu must be held.
func (b *Broker) markDirty(name string) *ackGroup {
	ls := b.st.limits[name]
	if ls == nil {
		delete(b.sent, name)
		return doneGroup()
	}
	now := b.now()
	if s := b.sent[name]; s != nil && s.covers(now, ls) {
		return s.g
	}
	rec := limitRecord{Limit: ls.cfg, TAT: ls.reservedTAT(now)}
	g := b.jr.add(journalOp{Key: limitKey(name), Val: mustJSON(rec)})
	b.sent[name] = &sentLimit{ls: ls, cfg: ls.cfg, tat: rec.TAT, g: g}
	if ls.isKey() {
		// A key's record holds its decay state only: no copy for `nats kv`.
		ls.stored = true
		return g
	}
	b.mirrorLimit(name, ls)
	return g
}

// exactLimits journals, at Stop, the exact decay state of every rate limit
// whose last record reserved ahead, so that a clean restart loses no slots.
// b.mu must be held.
func (b *Broker) exactLimits() {
	for name, s := range b.sent {
		ls := b.st.limits[name]
		if ls == nil || s.ls != ls || (s.cfg == ls.cfg && s.tat.Equal(ls.bucket.tat)) {
			continue
		}
		g := b.jr.add(journalOp{Key: limitKey(name), Val: ls.record()})
		b.sent[name] = &sentLimit{ls: ls, cfg: ls.cfg, tat: ls.bucket.tat, g: g}
	}
}
