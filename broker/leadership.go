package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// Leadership: any number of brokers may run on one bucket; one leads (serves
// the verbs and writes the journal), the others stand by (standby.go).
//
// Who should lead is decided by the leader lease, the bucket's key
// messages.LeaderKey: the leader rewrites it every quarter of the lease with
// a write conditional on the revision it last wrote (and a TTL, so that
// `nats kv` shows it lapse too). A standby that has seen the same revision
// for a whole lease by its own clock, or sees the key gone or released,
// takes it over with a write conditional on that revision: of several
// standbys one wins.
//
// Who can write is decided by the journal: every append is conditional on
// the journal's last sequence, and a new leader first appends a claim entry
// after the last entry it has read. A deposed leader's next append is
// refused (ErrDeposed), so nothing it does after that reaches the state.
//
// Reads are not in the journal: a leader answers only while its lease is
// valid by its own clock, counted from the moment it sent its last
// successful renewal and shortened by a tenth for clock-rate differences.
// A standby counts from the moment it saw that renewal, which is later, and
// waits the whole lease: the old leader's validity ends before the new
// leader can exist. A paused leader (SIGSTOP, a long GC) that wakes up finds
// its lease expired and answers nothing from its old view.

// leaseValidFraction is the part of the lease a leader counts as valid.
const leaseValidFraction = 0.9

// leadership is the broker's view of the leader lease.
type leadership struct {
	id string
	// clock0 is the origin of validUntil, read on the monotonic clock.
	clock0 time.Time
	// validUntil is, in nanoseconds since clock0, when this broker's lease
	// stops being valid by its own clock (0: not leading).
	validUntil atomic.Int64

	mu    sync.Mutex
	rec   messages.LeaderRecord // as last written by this broker
	rev   uint64                // its revision
	role  string
	since time.Time
	// seen is the leader record last seen (standby).
	seen messages.LeaderRecord
}

func newLeadership(id string) *leadership {
	return &leadership{id: id, clock0: time.Now(), role: messages.RoleStarting, since: time.Now().UTC()}
}

// term is the term of the lease this broker holds (or last held).
func (l *leadership) term() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Term
}

// elapsed is the monotonic time since clock0.
func (l *leadership) elapsed() int64 { return int64(time.Since(l.clock0)) }

// valid tells whether this broker's lease is valid now.
func (l *leadership) valid() bool { return l.elapsed() < l.validUntil.Load() }

func (l *leadership) setRole(role string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.role != role {
		l.role, l.since = role, time.Now().UTC()
	}
}

// leading tells whether the broker may answer as the leader now.
func (b *Broker) leading() bool { return b.lead.valid() }

// leaderSubject is the subject of the leader key's messages.
func (b *Broker) leaderSubject() string { return b.kvSubject + messages.LeaderKey }

// ttlSeconds is d rounded up to whole seconds (the server's TTL unit), at least 1 s.
func ttlSeconds(d time.Duration) time.Duration {
	return time.Duration(math.Max(1, math.Ceil(d.Seconds()))) * time.Second
}

// putLeader writes rec to the leader key if the key's last revision is rev
// (0: the key never existed), with a TTL of at least the lease. It returns
// the new revision; errLeaseTaken when rev is not the last.
func (b *Broker) putLeader(ctx context.Context, rec messages.LeaderRecord, rev uint64) (uint64, error) {
	m := nats.NewMsg(b.leaderSubject())
	m.Data = mustJSON(rec)
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(rev),
		jetstream.WithMsgTTL(ttlSeconds(time.Duration(rec.LeaseMS)*time.Millisecond)))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, errLeaseTaken
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// errLeaseTaken: the leader key changed since the revision a write expected.
var errLeaseTaken = errors.New("the leader key changed")

// claim writes this broker's leader record over revision rev (the one the
// standby saw lapse) with the term after prev. It reports whether this
// broker now holds the lease.
func (b *Broker) claim(ctx context.Context, rev uint64, prev messages.LeaderRecord) (bool, error) {
	rec := messages.LeaderRecord{ID: b.lead.id, Term: prev.Term + 1, Since: time.Now().UTC(), LeaseMS: b.opts.leaderLease.Milliseconds()}
	return b.writeLease(ctx, rev, rec)
}

// writeLease writes rec over revision rev; on success this broker holds the
// lease, valid from the moment the write was sent.
func (b *Broker) writeLease(ctx context.Context, rev uint64, rec messages.LeaderRecord) (bool, error) {
	sent := b.lead.elapsed()
	cctx, cancel := context.WithTimeout(ctx, b.opts.leaderLease/2)
	newRev, err := b.putLeader(cctx, rec, rev)
	cancel()
	if err != nil {
		if errors.Is(err, errLeaseTaken) {
			return false, nil
		}
		return false, err
	}
	b.lead.mu.Lock()
	b.lead.rec, b.lead.rev = rec, newRev
	b.lead.mu.Unlock()
	b.lead.validUntil.Store(sent + int64(float64(b.opts.leaderLease)*leaseValidFraction))
	return true, nil
}

// readLeader reads the leader key's last message (a record, a deletion or
// an expiry marker) and its revision; rev 0 when the key has none.
func (b *Broker) readLeader(ctx context.Context) (leaderSeen, error) {
	s := leaderSeen{at: time.Now()}
	stream, err := b.js.Stream(ctx, "KV_"+b.opts.bucket)
	if err != nil {
		return s, err
	}
	m, err := stream.GetLastMsgForSubject(ctx, b.leaderSubject())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	s.rev = m.Sequence
	if m.Header.Get("KV-Operation") == "" {
		var rec messages.LeaderRecord
		if json.Unmarshal(m.Data, &rec) == nil {
			s.rec, s.held = rec, !rec.Released
		}
	}
	return s, nil
}

// renewLeadership renews the lease every quarter of it until stop, or until
// it cannot: another broker took the key, or no renewal went through while
// the lease was valid. The broker then stops serving (ErrLostLeadership).
func (b *Broker) renewLeadership(stop <-chan struct{}) {
	lease := b.opts.leaderLease
	tick := time.NewTicker(lease / 4)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-b.dead:
			return
		case <-tick.C:
		}
		b.lead.mu.Lock()
		rec, rev := b.lead.rec, b.lead.rev
		b.lead.mu.Unlock()
		sent := b.lead.elapsed()
		ctx, cancel := context.WithTimeout(context.Background(), lease/4)
		newRev, err := b.putLeader(ctx, rec, rev)
		cancel()
		switch {
		case err == nil:
			b.lead.mu.Lock()
			b.lead.rev = newRev
			b.lead.mu.Unlock()
			b.lead.validUntil.Store(sent + int64(float64(lease)*leaseValidFraction))
		case errors.Is(err, errLeaseTaken):
			// A renewal stored after its answer timed out moved the
			// revision: the record is still this broker's. Go on from it
			// (the validity is still counted from the last answered one).
			own, ours, rerr := b.ownRecord(rec)
			switch {
			case ours:
				b.lead.mu.Lock()
				b.lead.rev = own
				b.lead.mu.Unlock()
				continue
			case rerr == nil:
				b.loseLeadership(fmt.Errorf("%w: another broker took the leader key", ErrLostLeadership))
				return
			case !b.leading():
				b.loseLeadership(fmt.Errorf("%w: not renewed within %v: %v", ErrLostLeadership, lease, rerr))
				return
			}
			// The key could not be read: try again while the lease lasts.
		case !b.leading():
			b.loseLeadership(fmt.Errorf("%w: not renewed within %v: %v", ErrLostLeadership, lease, err))
			return
		default:
			b.log.Warn("leader lease not renewed; retrying", "err", err)
		}
	}
}

// ownRecord reads whether the leader key still holds rec (this broker's
// record, as a renewal stored late wrote it) and returns its revision; err
// when the key could not be read.
func (b *Broker) ownRecord(rec messages.LeaderRecord) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.leaderLease/4)
	defer cancel()
	s, err := b.readLeader(ctx)
	if err != nil {
		return 0, false, err
	}
	if !s.held || s.rec.ID != rec.ID || s.rec.Term != rec.Term {
		return 0, false, nil
	}
	return s.rev, true, nil
}

// loseLeadership ends the lease at once and stops serving.
func (b *Broker) loseLeadership(err error) {
	b.lead.validUntil.Store(0)
	b.lead.setRole(messages.RoleStarting) // serving no more; the daemon stands by again
	b.die(err)
	if b.svc != nil {
		go func() { _ = b.svc.stop() }()
	}
}

// releaseLeadership hands the lease over at Stop: the record is rewritten
// as released (conditional on this broker's revision), so that a standby
// takes over at once instead of after the lease. Nothing rests on it.
func (b *Broker) releaseLeadership() {
	if !b.leading() {
		return
	}
	b.lead.mu.Lock()
	rec, rev := b.lead.rec, b.lead.rev
	b.lead.mu.Unlock()
	b.lead.validUntil.Store(0)
	rec.Released = true
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.leaderLease)
	defer cancel()
	if _, err := b.putLeader(ctx, rec, rev); err != nil {
		b.log.Warn("leader lease not released; a standby takes over when it lapses", "err", err)
		return
	}
	b.log.Info("leader lease released")
}

// leaderSeen is the state of the leader key as a standby saw it.
type leaderSeen struct {
	rev  uint64
	rec  messages.LeaderRecord
	held bool // a leader record, not released, not deleted
	at   time.Time
}

// observe records a watcher's entry.
func (s *leaderSeen) observe(e jetstream.KeyValueEntry) {
	s.rev, s.at, s.held, s.rec = e.Revision(), time.Now(), false, messages.LeaderRecord{Term: s.rec.Term}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var rec messages.LeaderRecord
	if json.Unmarshal(e.Value(), &rec) == nil {
		s.rec, s.held = rec, !rec.Released
	}
}

// lapse is how long after it was seen the record's lease lapses for a
// standby: the longer of its own lease and the one the leader announced.
func (b *Broker) lapse(s *leaderSeen) time.Duration {
	return max(b.opts.leaderLease, time.Duration(s.rec.LeaseMS)*time.Millisecond)
}

// campaign returns once this broker holds the leader lease, or with the
// error that ended its wait (ctx, or the broker died). Meanwhile the caller
// follows the journal.
func (b *Broker) campaign(ctx context.Context, journalTerm func() uint64) error {
	w, err := b.kv.Watch(ctx, messages.LeaderKey)
	if err != nil {
		return fmt.Errorf("%w: watch the leader key: %v", ErrStore, err)
	}
	// Stopping the watch deletes its consumer, which can take the JetStream
	// API timeout in a degraded cluster: not on the way to the takeover,
	// whose lease runs from the claim.
	defer func() { go func() { _ = w.Stop() }() }()
	var seen leaderSeen
	ready := false
	timer := time.NewTimer(b.opts.leaderLease)
	defer timer.Stop()
	logged := ""
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("%w: the watch of the leader key ended", ErrStore)
			}
			if e == nil {
				ready = true
			} else {
				seen.observe(e)
			}
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.dead:
			return b.deadErr
		}
		if !ready {
			continue
		}
		b.lead.mu.Lock()
		b.lead.seen = seen.rec
		b.lead.mu.Unlock()
		wait := b.lapse(&seen) - time.Since(seen.at)
		if seen.held && b.opts.predecessor != "" && seen.rec.ID == b.opts.predecessor {
			wait = 0 // this process's previous broker, stopped: it serves no more
		}
		if seen.held && wait > 0 {
			if logged != seen.rec.ID {
				logged = seen.rec.ID
				b.log.Info("standing by", "leader", seen.rec.ID, "term", seen.rec.Term, "leader_since", seen.rec.Since)
			}
			timer.Reset(wait)
			continue
		}
		var won bool
		if seen.held && seen.rec.ID == b.lead.id {
			// This broker's own claim, stored after its answer timed out:
			// confirm it by writing it again over its revision.
			won, err = b.writeLease(ctx, seen.rev, seen.rec)
		} else {
			prev := seen.rec
			prev.Term = max(prev.Term, journalTerm())
			won, err = b.claim(ctx, seen.rev, prev)
		}
		if won {
			b.log.Info("took the leader lease", "term", b.lead.term(), "previous", seen.rec.ID, "previous_released", !seen.held)
			return nil
		}
		if err != nil {
			b.log.Warn("leader lease not claimed; retrying", "err", err)
		}
		// Another standby won, or the key changed in a way the watch has
		// not shown (an expiry marker that lapsed leaves no message at
		// all): read it as it is, then look again shortly.
		if now, err := b.readLeader(ctx); err == nil && now.rev != seen.rev {
			seen = now
		}
		timer.Reset(b.opts.leaderLease / 4)
	}
}
