package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The journal is the broker's write-ahead log: a JetStream stream beside the
// bucket whose entries are the changes to the stored record set (a put or a
// deletion of a limit, lease or waiter record, keyed as in records.go).
//
// One append is in flight at a time and carries every change made since the
// previous one, across all limits (group commit). Every append carries
// Nats-Expected-Last-Sequence: a second broker writing the same journal is
// refused, and a broker whose append is refused stops serving (ErrDeposed).
// An append larger than the max payload is split into parts sharing a
// batch id; replay applies a batch only once all its parts are read, so a
// crash between parts loses the whole batch, which nobody was answered for.
// (Own framing rather than JetStream's atomic batch publish: that needs every
// part in one publish window and is refused in async persist mode; a part
// here is an ordinary conditional publish, retried by its Nats-Msg-Id.)

// Headers of a journal message.
const (
	// hdrBatch is the id of the append the message is part of.
	hdrBatch = "Slotbroker-Batch"
	// hdrPart is "i/n": the message is part i of n of its append.
	hdrPart = "Slotbroker-Part"
)

// journalOp is one change to the record set: a put of a record, or its
// deletion when Val is empty.
type journalOp struct {
	Key string          `json:"k"`
	Val json.RawMessage `json:"v,omitempty"`
}

// journalEntry is the body of one journal message.
type journalEntry struct {
	Ops []journalOp `json:"ops"`
}

// journal appends the record changes of the broker, one append at a time.
type journal struct {
	js       jetstream.JetStream
	stream   string
	subject  string
	maxBytes int
	quit     <-chan struct{}
	// leading tells whether the broker still holds the leader lease: an
	// append is not sent, nor retried, once it does not.
	leading func() bool

	// Guarded by the Broker's mu:
	pending []journalOp
	group   *ackGroup // done when pending is stored
	// sealed are appends closed for more changes, in order, waiting for the
	// one in flight (a snapshot seals the pending append so that it knows
	// the sequence covering everything before it).
	sealed []sealedAppend
	wake   chan struct{}
	// lastSeq is the stream's last sequence as this broker stored it.
	lastSeq uint64
	// appends counts stored appends (for snapshots every N).
	appends uint64
	// dead is the error of a failed append: every later change fails with it.
	dead error
}

// sealedAppend is an append closed for further changes.
type sealedAppend struct {
	ops []journalOp
	g   *ackGroup
}

// journalStream is the journal's stream name for a bucket.
func journalStream(bucket string) string { return "SLOTBROKER_JOURNAL_" + bucket }

// journalSubject is the journal's subject for a bucket.
func journalSubject(bucket string) string { return "$SLOTBROKER." + bucket + ".journal" }

// ErrDeposed: another writer appended to the journal (its expected last
// sequence was not this broker's): this broker no longer owns the state.
var ErrDeposed = errors.New("broker: another broker writes the journal")

// openJournal creates (or opens) the journal stream.
func openJournal(ctx context.Context, js jetstream.JetStream, bucket string, storage jetstream.StorageType, replicas, maxPayload int, quit <-chan struct{}, leading func() bool) (*journal, error) {
	cfg := jetstream.StreamConfig{
		Name: journalStream(bucket), Description: "slotbroker journal: the write-ahead log of bucket " + bucket,
		Subjects: []string{journalSubject(bucket)}, Storage: storage, Replicas: replicas,
		Duplicates: 2 * time.Minute, Discard: jetstream.DiscardOld,
	}
	// As for the bucket: an existing journal as configured needs no meta leader.
	s, err := js.Stream(ctx, cfg.Name)
	if err != nil || !journalFits(s.CachedInfo().Config, cfg) {
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open journal stream %q: %w", ErrStore, journalStream(bucket), err)
	}
	return &journal{js: js, stream: journalStream(bucket), subject: journalSubject(bucket),
		maxBytes: max(maxPayload-8192, 16384), quit: quit, leading: leading, wake: make(chan struct{}, 1)}, nil
}

// journalFits tells whether an existing journal stream is configured as want.
func journalFits(have, want jetstream.StreamConfig) bool {
	return have.Replicas == want.Replicas && have.Storage == want.Storage && have.Duplicates == want.Duplicates &&
		len(have.Subjects) == 1 && have.Subjects[0] == want.Subjects[0]
}

// add queues ops for the next append and returns the group that is done
// once they are stored. The Broker's mu must be held.
func (j *journal) add(ops ...journalOp) *ackGroup {
	if j.dead != nil {
		g := newAckGroup()
		g.err = j.dead
		close(g.done)
		return g
	}
	if j.group == nil {
		j.group = newAckGroup()
	}
	j.pending = append(j.pending, ops...)
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return j.group
}

// current is the group of the pending append (made when none is pending).
// The Broker's mu must be held.
func (j *journal) current() *ackGroup {
	if j.group == nil {
		j.group = newAckGroup()
	}
	return j.group
}

// seal closes the pending append to further changes: later changes go to
// another append. It returns the sealed append's group (already done when
// nothing was pending). The Broker's mu must be held.
func (j *journal) seal() *ackGroup {
	if j.dead != nil {
		return j.add()
	}
	if len(j.pending) == 0 {
		if j.group != nil {
			// Waiting for nothing: done with the appends before it.
			j.sealed = append(j.sealed, sealedAppend{g: j.group})
			j.group = nil
			j.kick()
			return j.sealed[len(j.sealed)-1].g
		}
		g := newAckGroup()
		j.sealed = append(j.sealed, sealedAppend{g: g})
		j.kick()
		return g
	}
	s := sealedAppend{ops: j.pending, g: j.current()}
	j.sealed = append(j.sealed, s)
	j.pending, j.group = nil, nil
	j.kick()
	return s.g
}

func (j *journal) kick() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// next takes the next append to send: the oldest sealed one, or everything
// pending. The Broker's mu must be held.
func (j *journal) next() (sealedAppend, bool) {
	if len(j.sealed) > 0 {
		s := j.sealed[0]
		j.sealed = j.sealed[1:]
		return s, true
	}
	if j.group == nil {
		return sealedAppend{}, false
	}
	s := sealedAppend{ops: j.pending, g: j.group}
	j.pending, j.group = nil, nil
	return s, true
}

// splitEntries encodes ops as journal message bodies of at most maxBytes
// each (one op larger than that gets a body of its own).
func splitEntries(ops []journalOp, maxBytes int) [][]byte {
	var out [][]byte
	var part []journalOp
	size := 16
	flush := func() {
		if len(part) == 0 {
			return
		}
		out = append(out, mustJSON(journalEntry{Ops: part}))
		part, size = nil, 16
	}
	for _, op := range ops {
		n := len(op.Key) + len(op.Val) + 16
		if size+n > maxBytes {
			flush()
		}
		part = append(part, op)
		size += n
	}
	flush()
	return out
}

// appendOps stores ops as one append (in parts if need be), each part
// conditional on the journal's last sequence. A publish that meets no
// responders or times out is retried with the same message id, which the
// stream deduplicates. It returns ErrDeposed when another writer appended.
func (j *journal) appendOps(ops []journalOp, lastSeq uint64) (uint64, error) {
	bodies := splitEntries(ops, j.maxBytes)
	batch := rand.Text()
	for i, body := range bodies {
		m := nats.NewMsg(j.subject)
		m.Data = body
		m.Header.Set(hdrBatch, batch)
		m.Header.Set(hdrPart, strconv.Itoa(i+1)+"/"+strconv.Itoa(len(bodies)))
		seq, err := j.publish(m, batch+"-"+strconv.Itoa(i+1), lastSeq)
		if err != nil {
			return lastSeq, err
		}
		lastSeq = seq
	}
	return lastSeq, nil
}

// publish sends one conditional part until it is stored, refused, or the
// broker stops.
func (j *journal) publish(m *nats.Msg, id string, lastSeq uint64) (uint64, error) {
	backoff := 20 * time.Millisecond
	for {
		if !j.leading() {
			return 0, fmt.Errorf("%w: append to %s not sent: this broker no longer holds the leader lease", ErrLostLeadership, j.stream)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ack, err := j.js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectLastSequence(lastSeq))
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: append to %s refused: %v (expected last sequence %d)", ErrDeposed, j.stream, err, lastSeq)
		}
		if !transientPublishError(err) {
			return 0, fmt.Errorf("%w: append to %s: %v", ErrStore, j.stream, err)
		}
		select {
		case <-j.quit:
			return 0, fmt.Errorf("%w: append to %s not stored before the broker stopped: %v", ErrStore, j.stream, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// transientPublishError tells whether a publish may be retried as is: no
// stream leader answered, or the answer did not come in time.
func transientPublishError(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		strings.Contains(err.Error(), "no responders")
}

// runJournal sends the appends one at a time, in order, until Stop (after
// the last one) or until an append fails: the broker then stops serving.
func (b *Broker) runJournal() {
	defer close(b.writerDone)
	for {
		b.mu.Lock()
		s, ok := b.jr.next()
		b.mu.Unlock()
		if !ok {
			select {
			case <-b.jr.wake:
				continue
			case <-b.writerStop:
				b.mu.Lock()
				s, ok = b.jr.next()
				b.mu.Unlock()
				if !ok {
					return
				}
			}
		}
		if !b.store(s) {
			return
		}
	}
}

// store appends s and applies it to the view; it fails the broker when the
// append is refused or cannot be stored.
func (b *Broker) store(s sealedAppend) bool {
	b.mu.Lock()
	last := b.jr.lastSeq
	b.mu.Unlock()
	seq := last
	if len(s.ops) > 0 {
		var err error
		began := time.Now()
		seq, err = b.jr.appendOps(s.ops, last)
		if err == nil {
			b.met.appended(len(s.ops), time.Since(began))
		}
		if err != nil {
			s.g.err = err
			close(s.g.done)
			b.failJournal(err)
			return false
		}
		b.view.apply(s.ops, seq)
	}
	b.mu.Lock()
	b.jr.lastSeq = seq
	b.applied.Store(seq)
	if len(s.ops) > 0 {
		b.jr.appends++
	}
	b.mu.Unlock()
	s.g.seq = seq
	close(s.g.done)
	return true
}

// failJournal stops the broker's service after a failed append: every
// change waiting for an append fails, and so does every later one.
func (b *Broker) failJournal(err error) {
	b.mu.Lock()
	b.jr.dead = err
	for {
		s, ok := b.jr.next()
		if !ok {
			break
		}
		s.g.err = err
		close(s.g.done)
	}
	b.mu.Unlock()
	b.die(fmt.Errorf("%w: %w", ErrUnavailable, err))
	if b.svc != nil {
		go func() { _ = b.svc.stop() }()
	}
}
