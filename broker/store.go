package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// resume rebuilds the state of a broker that has just claimed the journal
// (at sequence claimed) from the view the follower built: the newest
// snapshot and the journal after it, or a bucket of the previous release.
// Lease deadlines are re-armed: a holder gets at least its TTL from now,
// as etcd gives on promotion, so that a failover never expires a live
// holder. A snapshot is written at once when none was loaded, so that the
// next start depends neither on the journal's first entries nor on the
// imported keys.
func (b *Broker) resume(ctx context.Context, base baseState, f *follower, claimed uint64) error {
	b.jr.lastSeq = claimed
	b.applied.Store(claimed)
	b.view.apply(nil, claimed)
	lastToken := max(base.lastToken, b.tokenFloor)
	if base.man == nil {
		// Before the state exists: a failure here leaves nothing waiting
		// for a journal writer that will not run.
		b.mu.Lock()
		b.st.lastToken = lastToken
		b.mu.Unlock()
		if err := b.writeSnapshot(ctx); err != nil {
			return err
		}
		if base.imported {
			b.dropLegacy(ctx, base.legacy)
		}
	}
	b.restore(b.view.records(), lastToken)
	b.log.Info("journal replayed", "snapshot", manifestSeq(base.man), "from", base.from, "read_to", f.readTo.Load(), "claimed", claimed, "imported", base.imported)
	return nil
}

func manifestSeq(m *snapManifest) uint64 {
	if m == nil {
		return 0
	}
	return m.Seq
}

// opsOf turns records into puts.
func opsOf(recs map[string][]byte) []journalOp {
	ops := make([]journalOp, 0, len(recs))
	for k, v := range recs {
		ops = append(ops, journalOp{Key: k, Val: v})
	}
	return ops
}

// partOf parses "i/n" (a message without it is a whole append).
func partOf(h string) (int, int) {
	i, n, ok := strings.Cut(h, "/")
	if !ok {
		return 1, 1
	}
	a, err1 := strconv.Atoi(i)
	c, err2 := strconv.Atoi(n)
	if err1 != nil || err2 != nil || a < 1 || c < a {
		return 1, 1
	}
	return a, c
}

// tokenOf is the fencing token of a lease put, or 0.
func tokenOf(op journalOp) uint64 {
	if !strings.HasPrefix(op.Key, leaseKeyPrefix) || len(op.Val) == 0 {
		return 0
	}
	var r struct {
		Token uint64 `json:"token"`
	}
	_ = json.Unmarshal(op.Val, &r)
	return r.Token
}

// readLegacy reads the records of a bucket written by the previous release:
// limit.*, lease.* and wait.* keys. A lease stored without a token had the
// entry's revision as its token, which the import writes into the record.
func (b *Broker) readLegacy(ctx context.Context) (map[string][]byte, error) {
	recs := map[string][]byte{}
	w, err := b.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%w: read bucket %q: %w", ErrStore, b.opts.bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: read bucket %q: %v", ErrStore, b.opts.bucket, ctx.Err())
		}
		if e == nil {
			return recs, nil
		}
		val := e.Value()
		switch kind, _ := keyKind(e.Key()); kind {
		case leaseKeyPrefix:
			var r leaseRecord
			if json.Unmarshal(val, &r) == nil && r.Token == 0 {
				r.Token = e.Revision()
				val = mustJSON(r)
			}
		case limitKeyPrefix, waiterKeyPrefix:
		default:
			continue
		}
		recs[e.Key()] = val
	}
}

// dropLegacy removes the imported lease and wait keys (the limit keys stay:
// they are the bucket's copies of the limits' configurations). Nothing
// depends on it: once a snapshot exists, the legacy keys are never read.
func (b *Broker) dropLegacy(ctx context.Context, recs map[string][]byte) {
	for k := range recs {
		if kind, _ := keyKind(k); kind == leaseKeyPrefix || kind == waiterKeyPrefix {
			_ = b.kv.Purge(ctx, k, jetstream.PurgeTTL(purgeMarkerTTL))
		}
	}
}

// restore rebuilds the state from the records: limits, then leases
// (expired ones are dropped at once, grants not yet accepted are pushed
// again), then waiters in the order they were queued. Records that cannot be
// served are logged and skipped.
func (b *Broker) restore(recs map[string][]byte, lastToken uint64) {
	loaded := decodeRecords(recs, b.opts.prefix, func(msg, key string, detail any) { b.log.Warn(msg, "key", key, "detail", detail) })
	b.mu.Lock()
	now := b.now()
	fx := &effects{}
	expired := restoreState(b.st, loaded, lastToken, now, true, fx)
	bt := b.applyLocked(fx)
	b.mu.Unlock()
	b.log.Info("state loaded", "limits", len(loaded.limits), "leases", len(loaded.leases), "waiters", len(loaded.waiters), "expired", expired)
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		_ = b.finish(bt)
	}()
}

// loadedRecords are the decoded records of a record set.
type loadedRecords struct {
	limits  []limitRecord
	leases  []leaseRecord
	waiters []waiterRecord
}

// decodeRecords decodes and checks records; those that cannot be served are
// reported to warn and skipped. Waiters come in the order they were queued.
func decodeRecords(recs map[string][]byte, servicePrefix string, warn func(msg, key string, detail any)) loadedRecords {
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Decoding is most of a start's own work (two timestamps a record):
	// the keys are decoded in parts on every core, then joined in order.
	parts := max(1, min(runtime.GOMAXPROCS(0), len(keys)/4096))
	out := make([]decodedPart, parts)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[p] = decodePart(keys[p*len(keys)/parts:(p+1)*len(keys)/parts], recs, servicePrefix)
		}()
	}
	wg.Wait()
	var all loadedRecords
	for _, d := range out {
		all.limits = append(all.limits, d.limits...)
		all.leases = append(all.leases, d.leases...)
		all.waiters = append(all.waiters, d.waiters...)
		for _, w := range d.warnings {
			warn(w.msg, w.key, w.detail)
		}
	}
	sort.SliceStable(all.waiters, func(i, j int) bool { return all.waiters[i].Order < all.waiters[j].Order })
	return all
}

// decodedPart is the records of some keys, with the warnings about them.
type decodedPart struct {
	loadedRecords
	warnings []struct {
		msg, key string
		detail   any
	}
}

func (d *decodedPart) warn(msg, key string, detail any) {
	d.warnings = append(d.warnings, struct {
		msg, key string
		detail   any
	}{msg, key, detail})
}

// decodePart decodes and checks the records of keys.
func decodePart(keys []string, recs map[string][]byte, servicePrefix string) decodedPart {
	var d decodedPart
	for _, key := range keys {
		val := recs[key]
		var derr error
		switch kind, _ := keyKind(key); kind {
		case limitKeyPrefix:
			var r limitRecord
			if derr = decodeRecord(val, &r); derr == nil {
				var note string
				if note, derr = checkLimitRecord(key, &r); note != "" {
					d.warn("a stored limit is outside today's bounds: serving it within them", key, note)
				}
			}
			if derr == nil {
				d.limits = append(d.limits, r)
			}
		case leaseKeyPrefix:
			var r leaseRecord
			if derr = decodeRecord(val, &r); derr == nil {
				derr = checkRecordID(key, r.ID)
			}
			if derr == nil {
				derr = checkNotifyRecord(r.Notify, servicePrefix, true)
			}
			if derr == nil {
				d.leases = append(d.leases, r)
			}
		case waiterKeyPrefix:
			var r waiterRecord
			if derr = decodeRecord(val, &r); derr == nil {
				derr = checkRecordID(key, r.ID)
			}
			if derr == nil {
				derr = checkNotifyRecord(r.Notify, servicePrefix, false)
			}
			if derr == nil {
				d.waiters = append(d.waiters, r)
			}
		}
		if derr != nil {
			d.warn("skipping a stored record that cannot be served", key, derr)
		}
	}
	return d
}

// restoreState rebuilds st from loaded records at now: limits, then leases
// (expired ones are dropped at once, grants not yet accepted are pushed
// again), then waiters in the order they were queued, then dispatches. It
// returns how many leases it expired. With rearm, every lease accepted by
// its holder gets at least its TTL from now first (the holder could not
// renew while no broker served). The same code serves a start and the
// replay property test.
func restoreState(st *state, rec loadedRecords, lastToken uint64, now time.Time, rearm bool, fx *effects) int {
	limits, leases, waiters := rec.limits, rec.leases, rec.waiters
	st.lastToken = lastToken
	for _, r := range limits {
		ls := newLimitState(r.Limit)
		ls.bucket.tat = r.TAT
		st.limits[r.Name] = ls
	}
	st.restoreKeys(fx)
	pendingWaits := map[string]bool{}
	for _, w := range waiters {
		pendingWaits[w.ID] = true
		// Every stored order is taken, also of waiters whose grant is pending.
		st.nextOrder = max(st.nextOrder, w.Order)
	}
	var regrant []*lease
	for _, rl := range leases {
		l := rl.lease()
		st.lastToken = max(st.lastToken, l.token)
		if l.waitID != "" && pendingWaits[l.waitID] && !now.Before(l.expires) {
			// Granted, never accepted, and expired since: queue the waiter again.
			fx.purge(leaseKey(l.id))
			continue
		}
		l.names = existing(st, l.names)
		if rearm && !(l.waitID != "" && pendingWaits[l.waitID]) && l.expires.Before(now.Add(l.ttl)) {
			l.expires = now.Add(l.ttl)
		}
		st.leases[l.id] = l
		if l.waitID != "" {
			st.byWait[l.waitID] = l
		}
		for _, n := range l.names {
			st.limits[n].held += l.occupy
			st.limits[n].leases[l.id] = l
		}
		if l.waitID != "" && pendingWaits[l.waitID] {
			l.pending = true
			delete(pendingWaits, l.waitID)
			regrant = append(regrant, l)
		}
		fx.arm = append(fx.arm, l)
	}
	for _, rw := range waiters {
		if !pendingWaits[rw.ID] {
			continue // its lease exists: the grant is pushed again below
		}
		wt := rw.waiter()
		wt.recovered = true
		wt.names = existing(st, wt.names)
		if len(wt.names) == 0 {
			fx.fails = append(fx.fails, failedWait{w: wt, err: messages.Errorf(messages.CodeNotFound, "the limits waited for no longer exist")})
			fx.purge(waiterKey(wt.id))
			continue
		}
		st.enqueue(wt)
		st.nextOrder = max(st.nextOrder, wt.order)
	}
	for _, l := range regrant {
		fx.grants = append(fx.grants, pushedGrant{w: &waiter{id: l.waitID, notify: l.notify, enc: l.enc, names: l.names, occupy: l.occupy,
			recovered: true, key: l.key, scope: l.scope}, lease: l})
	}
	var expired []string
	for id, l := range st.leases {
		if !now.Before(l.expires) {
			expired = append(expired, id)
		}
	}
	for _, id := range expired {
		st.expire(now, id, fx)
	}
	names := make([]string, 0, len(st.limits))
	for n := range st.limits {
		names = append(names, n)
	}
	for _, n := range names {
		st.dispatch(now, fx, n)
		fx.wake = append(fx.wake, n)
	}
	// Keys left idle (a decay record that outlived its purge) go.
	st.dropIdle(now, fx, names...)
	return len(expired)
}

// decodeRecord decodes a record. Unknown fields are ignored, so that a
// record written by a newer broker still loads; a record that does not
// belong to its key (written by something else than a broker) is refused by
// the checks after it.
func decodeRecord(data []byte, v any) error { return json.Unmarshal(data, v) }

// checkLimitRecord checks that a limit record is one a broker wrote for its
// key. A limit stored by an older broker outside today's bounds is brought
// within them, in the direction that admits less (fewer slots, slower
// decay), and the change is returned to be logged: never dropped, which
// would leave it unenforced.
func checkLimitRecord(key string, r *limitRecord) (string, error) {
	if _, name := keyKind(key); r.Name != name {
		return "", fmt.Errorf("the record names limit %q", r.Name)
	}
	if validateConfig(r.Limit.Limit, r.SlotDecayPerSecond) == nil {
		return "", nil
	}
	limit, decay := r.Limit.Limit, r.SlotDecayPerSecond
	switch {
	case limit < 0:
		limit = 0
	case limit > messages.MaxLimit:
		limit = messages.MaxLimit
	}
	switch {
	case math.IsNaN(decay) || decay < 0:
		return "", fmt.Errorf("slot_decay_per_second %v cannot be served", decay)
	case decay > maxDecay:
		decay = maxDecay
	}
	if decay > 0 && float64(limit)/decay > messages.MaxDrain.Seconds() {
		decay = math.Nextafter(float64(limit)/messages.MaxDrain.Seconds(), math.Inf(1))
	}
	if e := validateConfig(limit, decay); e != nil {
		return "", e
	}
	note := fmt.Sprintf("limit %d -> %d, slot_decay_per_second %g -> %g", r.Limit.Limit, limit, r.SlotDecayPerSecond, decay)
	r.Limit.Limit, r.SlotDecayPerSecond = limit, decay
	return note, nil
}

// checkRecordID checks that a lease or wait record is the one of its key.
func checkRecordID(key, id string) error {
	if _, want := keyKind(key); id != want {
		return fmt.Errorf("the record has id %q", id)
	}
	return nil
}

// checkNotifyRecord checks a stored notify subject (optional for leases).
func checkNotifyRecord(notify, prefix string, optional bool) error {
	if notify == "" && optional {
		return nil
	}
	if e := messages.CheckPushSubject(notify, prefix); e != nil {
		return e
	}
	return nil
}

// existing keeps the names that are limits in st (a key of a per-key
// limit is created for its leases and waiters).
func existing(st *state, names []string) []string {
	out := names[:0:0]
	for _, n := range names {
		if st.ensureKey(n) {
			out = append(out, n)
		}
	}
	return out
}
