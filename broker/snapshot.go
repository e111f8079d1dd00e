package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots: the whole record set, written periodically into the bucket
// off the request path, so that recovery reads a snapshot and the journal
// after it instead of the whole journal, and the journal stays bounded.
//
// A snapshot at journal sequence S is written as chunks "snap.<S>.<i>" (each
// under the max payload) and then its manifest "snap.<S>", which names the
// chunk count: a snapshot without its manifest, or with a chunk missing, is
// incomplete and ignored. Recovery takes the newest complete snapshot. Once a
// snapshot is complete, the snapshots older than the one before it are
// removed and the journal up to that previous one is purged. Nothing rests
// on those deletions: an old snapshot or journal entry that a crash brings
// back has a lower sequence and is ignored.

// Defaults of WithSnapshotEvery.
const (
	DefaultSnapshotEntries  = 10_000
	DefaultSnapshotInterval = time.Minute
)

// errIncompleteSnapshot: a snapshot with a chunk missing or unreadable;
// recovery falls back to the one before it.
var errIncompleteSnapshot = errors.New("incomplete snapshot")

// snapPrefix begins the keys of snapshots.
const snapPrefix = "snap."

// snapManifest names a complete snapshot.
type snapManifest struct {
	Seq     uint64    `json:"seq"`
	Chunks  int       `json:"chunks"`
	Records int       `json:"records"`
	At      time.Time `json:"at"`
	// LastToken is at least the fencing token of every lease created up to Seq.
	LastToken uint64 `json:"last_token"`
	// Term is the leader term of the broker that wrote the snapshot, so
	// that terms keep increasing once the journal's claims are purged.
	Term uint64 `json:"term,omitempty"`
}

// manifestKey and chunkKey are zero-padded so that keys sort by sequence.
func manifestKey(seq uint64) string     { return fmt.Sprintf("%s%020d", snapPrefix, seq) }
func chunkKey(seq uint64, i int) string { return manifestKey(seq) + "." + strconv.Itoa(i) }

// runSnapshots writes a snapshot after every snapshotEntries appends, or
// after snapshotInterval when anything was appended, until Stop.
func (b *Broker) runSnapshots() {
	defer close(b.snapDone)
	tick := time.NewTicker(min(b.opts.snapshotInterval/4, time.Second))
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-b.quit:
			return
		case <-b.dead:
			return
		case <-tick.C:
		}
		b.mu.Lock()
		since := b.jr.appends - b.snapAppends
		b.mu.Unlock()
		if since == 0 || (since < uint64(b.opts.snapshotEntries) && time.Since(last) < b.opts.snapshotInterval) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := b.writeSnapshot(ctx); err != nil {
			b.log.Warn("snapshot not written; the journal keeps growing until the next one", "err", err)
		}
		cancel()
		last = time.Now()
	}
}

// writeSnapshot writes the view as a snapshot at its sequence, then drops
// what the snapshot before it makes unnecessary.
func (b *Broker) writeSnapshot(ctx context.Context) error {
	began := time.Now()
	b.mu.Lock()
	appends := b.jr.appends
	b.mu.Unlock()
	recs, seq := b.view.freeze()
	// Read after the freeze: every lease in an append up to seq took its
	// token before, so the counter now is at least each of theirs.
	b.mu.Lock()
	lastToken := b.st.lastToken
	b.mu.Unlock()
	ops := make([]journalOp, 0, len(recs))
	for k, v := range recs {
		ops = append(ops, journalOp{Key: k, Val: v})
	}
	b.view.thaw()
	if seq <= b.snapSeq && b.snapSeq != 0 {
		return nil
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Key < ops[j].Key })
	bodies := splitEntries(ops, b.jr.maxBytes)
	for i, body := range bodies {
		if _, err := b.kv.Put(ctx, chunkKey(seq, i), body); err != nil {
			return fmt.Errorf("%w: snapshot %d chunk %d: %v", ErrStore, seq, i, err)
		}
	}
	man := snapManifest{Seq: seq, Chunks: len(bodies), Records: len(ops), At: time.Now().UTC(), LastToken: lastToken, Term: b.lead.term()}
	if _, err := b.kv.Put(ctx, manifestKey(seq), mustJSON(man)); err != nil {
		return fmt.Errorf("%w: snapshot %d manifest: %v", ErrStore, seq, err)
	}
	prev := b.snapSeq
	b.snapSeq = seq
	b.mu.Lock()
	b.snapAppends = appends
	b.mu.Unlock()
	b.met.snapshotWritten(time.Since(began))
	b.log.Debug("snapshot written", "seq", seq, "records", len(ops), "chunks", len(bodies))
	if prev > 0 {
		b.dropBefore(ctx, prev)
	}
	return nil
}

// dropBefore removes the snapshots older than keep and purges the journal
// below keep. Failures are only logged: nothing depends on them.
func (b *Broker) dropBefore(ctx context.Context, keep uint64) {
	mans, err := b.listManifests(ctx)
	if err != nil {
		b.log.Warn("old snapshots not listed", "err", err)
	}
	for _, m := range mans {
		if m.Seq >= keep {
			continue
		}
		for i := 0; i < m.Chunks; i++ {
			_ = b.kv.Purge(ctx, chunkKey(m.Seq, i), jetstream.PurgeTTL(purgeMarkerTTL))
		}
		_ = b.kv.Purge(ctx, manifestKey(m.Seq), jetstream.PurgeTTL(purgeMarkerTTL))
	}
	stream, err := b.js.Stream(ctx, b.jr.stream)
	if err == nil {
		err = stream.Purge(ctx, jetstream.WithPurgeSequence(keep+1))
	}
	if err != nil {
		b.log.Warn("journal not purged below the previous snapshot", "keep_from", keep+1, "err", err)
	}
}

// listManifests returns the snapshots' manifests, newest first.
func (b *Broker) listManifests(ctx context.Context) ([]snapManifest, error) {
	lister, err := b.kv.ListKeysFiltered(ctx, snapPrefix+"*")
	if err != nil {
		return nil, err
	}
	var out []snapManifest
	for key := range lister.Keys() {
		if strings.Count(key, ".") != 1 {
			continue
		}
		e, err := b.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var m snapManifest
		if json.Unmarshal(e.Value(), &m) != nil || manifestKey(m.Seq) != key {
			b.log.Warn("skipping an unreadable snapshot manifest", "key", key)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	return out, nil
}

// loadSnapshot returns the newest complete snapshot's manifest and records,
// or nil when there is none.
func (b *Broker) loadSnapshot(ctx context.Context) (*snapManifest, map[string][]byte, error) {
	mans, err := b.listManifests(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list snapshots: %w", ErrStore, err)
	}
	for i := range mans {
		m := &mans[i]
		recs, err := b.readChunks(ctx, m)
		if errors.Is(err, errIncompleteSnapshot) {
			b.log.Warn("skipping an incomplete snapshot", "seq", m.Seq, "err", err)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: read snapshot %d: %w", ErrStore, m.Seq, err)
		}
		return m, recs, nil
	}
	return nil, map[string][]byte{}, nil
}

func (b *Broker) readChunks(ctx context.Context, m *snapManifest) (map[string][]byte, error) {
	recs := make(map[string][]byte, m.Records)
	for i := 0; i < m.Chunks; i++ {
		e, err := b.kv.Get(ctx, chunkKey(m.Seq, i))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: chunk %d is missing", errIncompleteSnapshot, i)
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		var ent journalEntry
		if err := json.Unmarshal(e.Value(), &ent); err != nil {
			return nil, fmt.Errorf("%w: chunk %d: %v", errIncompleteSnapshot, i, err)
		}
		for _, op := range ent.Ops {
			recs[op.Key] = op.Val
		}
	}
	if len(recs) != m.Records {
		return nil, fmt.Errorf("%w: %d records, the manifest says %d", errIncompleteSnapshot, len(recs), m.Records)
	}
	return recs, nil
}
