package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// A standby keeps the record set warm: it loads the newest snapshot, then
// follows the journal into its view as the leader appends to it (the same
// apply as a leader's own appends and as recovery). When it takes over it
// reads the journal to its end, appends a claim entry conditional on that
// end (so that a deposed leader's next append is refused), and builds its
// state from the view. A single broker's start is the same path with a
// campaign that it wins at once.

// hdrLeader names the broker whose claim entry a journal message is; hdrTerm is its term.
const (
	hdrLeader = "Slotbroker-Leader"
	hdrTerm   = "Slotbroker-Term"
)

// errJournalGap: the journal was purged past what the follower had read
// (it lagged behind two snapshots): it reloads from the newest snapshot.
var errJournalGap = errors.New("the journal was purged past the entries this broker had read")

// assembler joins the parts of an append: an append is applied only once
// all its parts are read, so a crash between parts loses the whole append,
// which nobody was answered for.
type assembler struct {
	batch    string
	parts    []journalOp
	nextPart int
}

// feed takes one journal message and returns the ops of the append it
// completes, if any.
func (a *assembler) feed(h nats.Header, ops []journalOp) ([]journalOp, bool) {
	id := h.Get(hdrBatch)
	i, total := partOf(h.Get(hdrPart))
	switch {
	case i == 1:
		// A new append; one whose parts stopped short is dropped.
		a.batch, a.parts, a.nextPart = id, nil, 1
	case id != a.batch || i != a.nextPart:
		// A part without its beginning: never applied.
		a.batch, a.parts, a.nextPart = "", nil, 0
	}
	if a.nextPart != i {
		return nil, false
	}
	a.parts = append(a.parts, ops...)
	a.nextPart++
	if i < total {
		return nil, false
	}
	out := a.parts
	a.batch, a.parts, a.nextPart = "", nil, 0
	return out, true
}

// baseState is what the follower starts from: a snapshot's records (or a
// previous release's bucket) and the journal sequence after them.
type baseState struct {
	man       *snapManifest
	from      uint64
	lastToken uint64
	imported  bool
	legacy    map[string][]byte
}

// loadBase reads the newest complete snapshot into a fresh view; with none
// and an empty journal, a bucket written by the previous release is
// imported. It refuses a journal that does not reach back to the snapshot.
func (b *Broker) loadBase(ctx context.Context) (baseState, error) {
	man, recs, err := b.loadSnapshot(ctx)
	if err != nil {
		return baseState{}, err
	}
	stream, err := b.js.Stream(ctx, b.jr.stream)
	if err != nil {
		return baseState{}, fmt.Errorf("%w: journal %s: %w", ErrStore, b.jr.stream, err)
	}
	st := stream.CachedInfo().State
	base := baseState{man: man, from: 1}
	switch {
	case man != nil:
		base.from, base.lastToken = man.Seq+1, man.LastToken
		if man.Term > b.journalTerm.Load() {
			b.journalTerm.Store(man.Term)
		}
	case st.LastSeq == 0:
		if recs, err = b.readLegacy(ctx); err != nil {
			return baseState{}, err
		}
		base.imported = len(recs) > 0
		if base.imported {
			base.legacy = recs
			// The previous release's tokens were record revisions, also of
			// leases released since: go on above the bucket's last one.
			if kvs, err := b.js.Stream(ctx, "KV_"+b.opts.bucket); err == nil {
				base.lastToken = kvs.CachedInfo().State.LastSeq
			}
		}
	}
	if st.LastSeq >= base.from && st.FirstSeq > base.from {
		return baseState{}, fmt.Errorf("%w: the journal %s starts at sequence %d, but the newest readable snapshot covers only up to %d: refusing to start with part of the state (restore the bucket's snapshots, or start on a fresh bucket)",
			ErrStore, b.jr.stream, st.FirstSeq, base.from-1)
	}
	b.view = newRecordView()
	b.view.apply(opsOf(recs), base.from-1)
	b.lag.Store(st.LastSeq - min(st.LastSeq, base.from-1)) // until the follower reads
	return base, nil
}

// follower reads the journal into the view from a sequence on, until stopped.
type follower struct {
	b   *Broker
	asm *assembler
	// readTo is the last sequence read; maxToken the highest fencing token seen.
	readTo   atomic.Uint64
	maxToken atomic.Uint64

	mu       sync.Mutex
	progress chan struct{} // closed and replaced after each message
	err      error

	it   jetstream.MessagesContext
	done chan struct{}
}

// follow starts reading the journal from seq from into the view.
func (b *Broker) follow(ctx context.Context, from uint64, asm *assembler) (*follower, error) {
	cons, err := b.js.OrderedConsumer(ctx, b.jr.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return nil, fmt.Errorf("%w: read journal: %w", ErrStore, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("%w: read journal: %w", ErrStore, err)
	}
	f := &follower{b: b, asm: asm, progress: make(chan struct{}), it: it, done: make(chan struct{})}
	f.readTo.Store(from - 1)
	go f.run()
	return f, nil
}

// run applies messages until the iterator stops or fails.
func (f *follower) run() {
	defer close(f.done)
	for {
		m, err := f.it.Next()
		if err == nil {
			err = f.apply(m)
		}
		f.mu.Lock()
		if err != nil {
			f.err = err
		}
		close(f.progress)
		f.progress = make(chan struct{})
		f.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// apply takes one journal message into the view.
func (f *follower) apply(m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("%w: read journal: %v", ErrStore, err)
	}
	seq := meta.Sequence.Stream
	if seq != f.readTo.Load()+1 {
		return fmt.Errorf("%w: read %d after %d", errJournalGap, seq, f.readTo.Load())
	}
	var ent journalEntry
	if err := json.Unmarshal(m.Data(), &ent); err != nil {
		f.b.log.Warn("skipping an unreadable journal entry", "seq", seq, "err", err)
	}
	if term, err := strconv.ParseUint(m.Headers().Get(hdrTerm), 10, 64); err == nil && term > f.b.journalTerm.Load() {
		f.b.journalTerm.Store(term)
	}
	if ops, ok := f.asm.feed(m.Headers(), ent.Ops); ok {
		f.b.view.apply(ops, seq)
		for _, op := range ops {
			if t := tokenOf(op); t > f.maxToken.Load() {
				f.maxToken.Store(t)
			}
		}
	}
	f.readTo.Store(seq)
	f.b.applied.Store(seq)
	f.b.lag.Store(meta.NumPending) // for Ready and the metrics
	return nil
}

// waitFor blocks until the follower has read seq, failed, or ctx ended.
func (f *follower) waitFor(ctx context.Context, seq uint64) error {
	for {
		f.mu.Lock()
		ch, err := f.progress, f.err
		f.mu.Unlock()
		if f.readTo.Load() >= seq {
			return nil
		}
		if err != nil {
			if errors.Is(err, errJournalGap) {
				return err
			}
			return fmt.Errorf("%w: %v", errFollowerEnded, err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// failed returns the error that stopped the follower, if any.
func (f *follower) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// stop ends the follower and waits for it; it may be called again.
func (f *follower) stop() {
	f.it.Stop()
	<-f.done
}

// standBy loads the base state and follows the journal until this broker
// holds the leader lease. A follower that falls behind the journal's purge
// reloads from the newest snapshot.
func (b *Broker) standBy(ctx context.Context) (baseState, *follower, error) {
	base, f, err := b.loadAndFollow(ctx)
	if err != nil {
		return baseState{}, nil, err
	}
	b.lead.setRole(messages.RoleStandby)
	won := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The term goes on above the claims in the journal too, so it keeps
	// increasing when the leader key expired with every broker down.
	go func() { won <- b.campaign(cctx, b.journalTerm.Load) }()
	for {
		select {
		case err := <-won:
			if err != nil {
				f.stop()
				return baseState{}, nil, err
			}
			return base, f, nil
		case <-f.done:
		}
		// The follower stopped by itself: it fell behind the journal's purge
		// (or lost the stream): reload.
		b.log.Warn("following the journal again from the newest snapshot", "err", f.failed())
		if base, f, err = b.loadAndFollow(ctx); err != nil {
			cancel()
			<-won
			return baseState{}, nil, err
		}
	}
}

// loadAndFollow loads the base state and starts following the journal
// after it. Errors that pass by themselves (JetStream electing a leader,
// a node restarting) are retried until ctx ends.
func (b *Broker) loadAndFollow(ctx context.Context) (baseState, *follower, error) {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		base, err := b.loadBase(ctx)
		if err == nil {
			var f *follower
			if f, err = b.follow(ctx, base.from, &assembler{}); err == nil {
				return base, f, nil
			}
		}
		if !jetStreamNotReady(err) || ctx.Err() != nil {
			return baseState{}, nil, err
		}
		b.log.Info("waiting for JetStream to read the state", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

// takeOver makes the broker the journal's writer: it reads the journal to
// its end and appends a claim entry conditional on that end. An append that
// lands first (the old leader's last) is read too, and the claim tried again.
// JetStream errors that pass by themselves (a stream electing its leader
// after a node died) are retried while the lease is valid. It returns the
// claim's sequence.
func (b *Broker) takeOver(ctx context.Context, f *follower) (uint64, error) {
	defer func() { f.stop() }()
	backoff := 50 * time.Millisecond
	retry := func(err error) error {
		if !jetStreamNotReady(err) && !errors.Is(err, errFollowerEnded) {
			return err
		}
		if !b.leading() {
			return fmt.Errorf("%w: the lease lapsed while taking over: %v", ErrLostLeadership, err)
		}
		b.log.Info("taking over: waiting for the journal", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		return nil
	}
	began := time.Now()
	for {
		last, err := b.journalLast(ctx)
		if err == nil {
			// A follower that does not catch up within a second (its push
			// consumer stalled) is replaced by a fresh one from where it is.
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			err = f.waitFor(wctx, last)
			cancel()
			if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				b.log.Info("taking over: the journal's reader lags; reading afresh", "read", f.readTo.Load(), "last", last)
				f.stop()
				if nf, ferr := b.follow(ctx, f.readTo.Load()+1, f.asm); ferr == nil {
					nf.maxToken.Store(f.maxToken.Load())
					f = nf
				}
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if e := retry(err); e != nil {
				return 0, fmt.Errorf("%w: read the journal to its end: %w", ErrStore, e)
			}
			if f.failed() != nil {
				// The follower ended (its consumer failed): go on from where it was.
				f.stop()
				if nf, err := b.follow(ctx, f.readTo.Load()+1, f.asm); err == nil {
					nf.maxToken.Store(f.maxToken.Load())
					f = nf
				}
			}
			continue
		}
		f.stop()
		read := f.readTo.Load()
		seq, err := b.jr.appendClaim(b.lead.id, b.lead.term(), read)
		if err == nil {
			b.tokenFloor = max(b.tokenFloor, f.maxToken.Load())
			b.log.Info("claimed the journal", "seq", seq, "took", time.Since(began).Round(time.Millisecond))
			return seq, nil
		}
		if !errors.Is(err, ErrDeposed) {
			return 0, err
		}
		b.log.Info("the journal grew while taking over; reading on", "after", read)
		for {
			nf, err := b.follow(ctx, read+1, f.asm)
			if err == nil {
				nf.maxToken.Store(f.maxToken.Load())
				f = nf
				break
			}
			if e := retry(err); e != nil {
				return 0, e
			}
		}
	}
}

// journalLast is the journal's last sequence.
func (b *Broker) journalLast(ctx context.Context) (uint64, error) {
	stream, err := b.js.Stream(ctx, b.jr.stream)
	if err != nil {
		return 0, err
	}
	return stream.CachedInfo().State.LastSeq, nil
}

// errFollowerEnded: the follower's consumer ended without a gap.
var errFollowerEnded = errors.New("the journal's reader ended")

// appendClaim appends the claim entry of a new leader after sequence last.
func (j *journal) appendClaim(id string, term, last uint64) (uint64, error) {
	m := nats.NewMsg(j.subject)
	m.Data = mustJSON(journalEntry{Ops: []journalOp{}})
	batch := "claim-" + id + "-" + strconv.FormatUint(term, 10) + "-" + strconv.FormatUint(last, 10)
	m.Header.Set(hdrBatch, batch)
	m.Header.Set(hdrPart, "1/1")
	m.Header.Set(hdrLeader, id)
	m.Header.Set(hdrTerm, strconv.FormatUint(term, 10))
	return j.publish(m, batch, last)
}
