package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// The broker's persistence as a restart reads it (PROTOCOL.md §12): the
// newest complete snapshot in the bucket ("snap.<seq>" manifest naming its
// "snap.<seq>.<i>" chunks), then the journal stream's appends after it.
// These helpers read it on their own, with none of the broker's code, so
// that a test can check what a restarted broker would load.

// Names of the journal of the default bucket and of the headers that frame
// an append split into parts.
const (
	journalStreamName  = "SLOTBROKER_JOURNAL_" + messages.DefaultBucket
	journalSubjectName = "$SLOTBROKER." + messages.DefaultBucket + ".journal"
	journalHdrBatch    = "Slotbroker-Batch"
	journalHdrPart     = "Slotbroker-Part"
)

// jOp is one change to the record set: a put of a record, or its deletion
// when V is absent.
type jOp struct {
	K string          `json:"k"`
	V json.RawMessage `json:"v,omitempty"`
}

// jBody is the body of a journal message and of a snapshot chunk.
type jBody struct {
	Ops []jOp `json:"ops"`
}

// jManifest names a complete snapshot.
type jManifest struct {
	Seq       uint64 `json:"seq"`
	Chunks    int    `json:"chunks"`
	Records   int    `json:"records"`
	LastToken uint64 `json:"last_token"`
}

// jAppend is one complete journal append (all its parts), at the sequence
// of its last part.
type jAppend struct {
	seq uint64
	ops []jOp
}

// errJournalMoved: the journal or the snapshots changed under the reader (a
// newer snapshot purged what it was reading); reading again helps.
var errJournalMoved = errors.New("the snapshots or the journal moved while being read")

// storedRecords returns the records a broker restarted now would load: the
// newest complete snapshot, then every complete append of the journal after
// it applied in order (puts set a key, deletions remove it).
func storedRecords(t testing.TB, nc *nats.Conn) map[string]json.RawMessage {
	t.Helper()
	recs, _ := storedState(t, nc)
	return recs
}

// storedState is storedRecords with the newest complete snapshot's
// manifest (nil when there is none).
func storedState(t testing.TB, nc *nats.Conn) (map[string]json.RawMessage, *jManifest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		recs, man, err := readStored(ctx, js)
		if err == nil {
			return recs, man
		}
		if !errors.Is(err, errJournalMoved) || attempt == 10 {
			t.Fatalf("read the stored records: %v", err)
		}
	}
}

func readStored(ctx context.Context, js jetstream.JetStream) (map[string]json.RawMessage, *jManifest, error) {
	man, recs, err := newestSnapshot(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	from := uint64(1)
	if man != nil {
		from = man.Seq + 1
	}
	appends, err := readJournal(ctx, js, from)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range appends {
		for _, op := range a.ops {
			if len(op.V) == 0 {
				delete(recs, op.K)
			} else {
				recs[op.K] = op.V
			}
		}
	}
	return recs, man, nil
}

// newestSnapshot reads the newest snapshot whose manifest and chunks are
// all there and agree.
func newestSnapshot(ctx context.Context, js jetstream.JetStream) (*jManifest, map[string]json.RawMessage, error) {
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket: %w", err)
	}
	lister, err := kv.ListKeysFiltered(ctx, "snap.*")
	if err != nil {
		return nil, nil, fmt.Errorf("list snapshots: %w", err)
	}
	var mans []jManifest
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // removed since listed
		}
		var m jManifest
		if err := json.Unmarshal(e.Value(), &m); err != nil || key != fmt.Sprintf("snap.%020d", m.Seq) {
			return nil, nil, fmt.Errorf("manifest %s is not one: %s", key, e.Value())
		}
		mans = append(mans, m)
	}
	sort.Slice(mans, func(i, j int) bool { return mans[i].Seq > mans[j].Seq })
next:
	for i := range mans {
		m := &mans[i]
		recs := map[string]json.RawMessage{}
		for c := 0; c < m.Chunks; c++ {
			e, err := kv.Get(ctx, fmt.Sprintf("snap.%020d.%d", m.Seq, c))
			if err != nil {
				continue next // incomplete: a restart skips it too
			}
			var b jBody
			if err := json.Unmarshal(e.Value(), &b); err != nil {
				return nil, nil, fmt.Errorf("snapshot %d chunk %d: %v", m.Seq, c, err)
			}
			for _, op := range b.Ops {
				recs[op.K] = op.V
			}
		}
		if len(recs) != m.Records {
			continue
		}
		return m, recs, nil
	}
	return nil, map[string]json.RawMessage{}, nil
}

// readJournal returns the complete appends of the journal from sequence
// from (0: from its first message) to its last message now, in order. An
// append whose parts stop short (a crash between them) is left out, as a
// restart leaves it out.
func readJournal(ctx context.Context, js jetstream.JetStream, from uint64) ([]jAppend, error) {
	stream, err := js.Stream(ctx, journalStreamName)
	if err != nil {
		return nil, fmt.Errorf("journal stream: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("journal stream info: %w", err)
	}
	last := info.State.LastSeq
	if from == 0 {
		from = max(info.State.FirstSeq, 1)
	}
	if last < from {
		return nil, nil
	}
	if info.State.FirstSeq > from {
		// Entries after the snapshot are gone: purged below a newer
		// snapshot than the one read.
		return nil, fmt.Errorf("%w: journal starts at %d, the snapshot needs it from %d", errJournalMoved, info.State.FirstSeq, from)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return nil, fmt.Errorf("journal consumer: %w", err)
	}
	var out []jAppend
	var batch string
	var parts []jOp
	next := 0
	seq := from - 1
	for seq < last {
		msgs, err := cons.Fetch(int(min(last-seq, 512)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read journal: %w", err)
			}
			if meta.Sequence.Stream != seq+1 {
				return nil, fmt.Errorf("%w: journal message %d after %d", errJournalMoved, meta.Sequence.Stream, seq)
			}
			seq = meta.Sequence.Stream
			var b jBody
			if err := json.Unmarshal(m.Data(), &b); err != nil {
				return nil, fmt.Errorf("journal message %d: %v: %s", seq, err, m.Data())
			}
			id := m.Headers().Get(journalHdrBatch)
			i, n := journalPart(m.Headers().Get(journalHdrPart))
			switch {
			case i == 1:
				// A new append: one whose parts stopped short is dropped.
				batch, parts, next = id, nil, 1
			case id != batch || i != next:
				// A part of an append whose first parts are not here.
				batch, parts, next = "", nil, 0
				continue
			}
			parts = append(parts, b.Ops...)
			next++
			if i == n {
				out = append(out, jAppend{seq: seq, ops: parts})
				batch, parts, next = "", nil, 0
			}
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		if got == 0 {
			return nil, fmt.Errorf("%w: journal read stopped at %d of %d", errJournalMoved, seq, last)
		}
	}
	return out, nil
}

// journalPart parses the part header "i/n"; a message without it is a
// whole append.
func journalPart(h string) (int, int) {
	a, b, ok := strings.Cut(h, "/")
	if !ok {
		return 1, 1
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || i < 1 || n < i {
		return 1, 1
	}
	return i, n
}

// journalOps counts the operations (puts and deletions) on key in the
// complete appends the journal holds now. Entries below the snapshot before
// the newest one are purged, so it counts from a broker's start only while
// it has written at most one snapshot (a new broker on an empty store
// writes its first after WithSnapshotEvery's interval or entries).
func journalOps(t testing.TB, nc *nats.Conn, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		appends, err := readJournal(ctx, js, 0)
		if errors.Is(err, errJournalMoved) && attempt < 10 {
			continue
		}
		if err != nil {
			t.Fatalf("read the journal: %v", err)
		}
		n := 0
		for _, a := range appends {
			for _, op := range a.ops {
				if op.K == key {
					n++
				}
			}
		}
		return n
	}
}

// journalOutage returns functions that begin and end an outage of the
// broker's journal, as a stream without a leader has: begin moves the
// stream's subjects away (the broker's appends meet no responders, and it
// retries them), end moves them back. An outage still going on when the
// test ends is ended first (before the broker's Stop, which waits for the
// appends of the requests in flight).
func journalOutage(ctx context.Context, t testing.TB, js jetstream.JetStream) (begin, end func()) {
	t.Helper()
	stream, err := js.Stream(ctx, journalStreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	var mu sync.Mutex
	out := false
	set := func(ctx context.Context, down bool) {
		mu.Lock()
		defer mu.Unlock()
		if out == down {
			return
		}
		c := cfg
		if down {
			c.Subjects = []string{"journal-outage.>"}
		}
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Errorf("update the journal stream: %v", err)
			return
		}
		out = down
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		set(ctx, false)
	})
	return func() { set(ctx, true) }, func() { set(ctx, false) }
}

// envJournalOutage is journalOutage on a connection of its own to ev's server.
func envJournalOutage(t *testing.T, ev *env) (begin, end func()) {
	t.Helper()
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	return journalOutage(ctxT(t, 120*time.Second), t, js)
}

// asyncReply is the answer (or the error) of a request sent in the background.
type asyncReply struct {
	msg *nats.Msg
	err error
}

// requestAsync sends a request in the background; its answer arrives on the
// returned channel.
func requestAsync(nc *nats.Conn, subject string, body []byte, timeout time.Duration) <-chan asyncReply {
	ch := make(chan asyncReply, 1)
	go func() {
		m, err := nc.Request(subject, body, timeout)
		ch <- asyncReply{m, err}
	}()
	return ch
}

// notYet fails t if ch already holds an answer.
func notYet(t *testing.T, ch <-chan asyncReply, what string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s ended during the journal outage: %v", what, r.err)
		}
		t.Fatalf("%s was answered during the journal outage (its change cannot be stored): %s", what, r.msg.Data)
	default:
	}
}

// recordField decodes one field of a stored record.
func recordField[T any](t testing.TB, recs map[string]json.RawMessage, key, field string) (T, bool) {
	t.Helper()
	var zero T
	raw, ok := recs[key]
	if !ok {
		return zero, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("record %s: %v: %s", key, err, raw)
	}
	f, ok := m[field]
	if !ok {
		return zero, false
	}
	var v T
	if err := json.Unmarshal(f, &v); err != nil {
		t.Fatalf("record %s field %s: %v: %s", key, field, err, f)
	}
	return v, true
}

// journalPartWriter returns a function that appends, as another writer
// would, one part ("i/n") of append batch carrying the record of limit
// name, conditional on the journal's last sequence. The broker must be
// stopped.
func journalPartWriter(ctx context.Context, t *testing.T, ev *env) (write func(batch, part, name string), last func() uint64) {
	t.Helper()
	try, last := journalPartTryWriter(ctx, t, ev)
	return func(batch, part, name string) {
		t.Helper()
		if err := try(batch, part, name); err != nil {
			t.Fatal(err)
		}
	}, last
}

// journalPartTryWriter is journalPartWriter whose write returns the error of
// a refused append (the journal moved on since this writer's last append).
func journalPartTryWriter(ctx context.Context, t *testing.T, ev *env) (write func(batch, part, name string) error, last func() uint64) {
	t.Helper()
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, journalStreamName)
	if err != nil {
		t.Fatal(err)
	}
	seq := stream.CachedInfo().State.LastSeq
	now := time.Now().UTC()
	write = func(batch, part, name string) error {
		rec, _ := json.Marshal(map[string]any{"name": name, "limit": 1, "active": true, "created_at": now, "updated_at": now})
		body, _ := json.Marshal(map[string]any{"ops": []map[string]any{{"k": "limit." + name, "v": json.RawMessage(rec)}}})
		m := nats.NewMsg(journalSubjectName)
		m.Data = body
		m.Header.Set(journalHdrBatch, batch)
		m.Header.Set(journalHdrPart, part)
		ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequence(seq))
		if err != nil {
			return err
		}
		seq = ack.Sequence
		return nil
	}
	return write, func() uint64 { return seq }
}

// legacyBucket returns the broker's bucket and a function that writes a
// record into it as the release before the journal did (returning its
// revision). The broker must be stopped with nothing journaled.
func legacyBucket(ctx context.Context, t *testing.T, ev *env) (jetstream.KeyValue, func(key string, v any) uint64) {
	t.Helper()
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// The previous release had neither a journal nor snapshots (every
	// start writes a claim entry and, on a fresh bucket, a snapshot).
	if err := js.DeleteStream(ctx, "SLOTBROKER_JOURNAL_"+messages.DefaultBucket); err != nil {
		t.Fatal(err)
	}
	if lister, err := kv.ListKeysFiltered(ctx, "snap.>"); err == nil {
		for k := range lister.Keys() {
			if err := kv.Purge(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	return kv, func(key string, v any) uint64 {
		t.Helper()
		data, _ := json.Marshal(v)
		rev, err := kv.Put(ctx, key, data)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
}
