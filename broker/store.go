package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// load rebuilds the state from the bucket: limits, then leases (expired ones
// are dropped at once, grants not yet accepted are pushed again), then
// waiters in the order they were queued.
func (b *Broker) load(ctx context.Context) error {
	w, err := b.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("%w: read bucket %q: %v", ErrStore, b.opts.bucket, err)
	}
	defer func() { _ = w.Stop() }()
	var limits []limitRecord
	type revLease struct {
		rec leaseRecord
		rev uint64
	}
	var leases []revLease
	type revWaiter struct {
		rec waiterRecord
		rev uint64
	}
	var waiters []revWaiter
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return fmt.Errorf("%w: read bucket %q: %v", ErrStore, b.opts.bucket, ctx.Err())
		}
		if e == nil {
			break
		}
		prefix, _ := keyKind(e.Key())
		var derr error
		switch prefix {
		case limitKeyPrefix:
			var r limitRecord
			if derr = strictJSON(e.Value(), &r); derr == nil {
				var note string
				if note, derr = checkLimitRecord(e.Key(), &r); note != "" {
					b.log.Warn("a stored limit is outside today's bounds: serving it within them", "key", e.Key(), "change", note)
				}
			}
			if derr == nil {
				limits = append(limits, r)
			}
		case leaseKeyPrefix:
			var r leaseRecord
			if derr = strictJSON(e.Value(), &r); derr == nil {
				derr = b.checkNotifyRecord(r.Notify, true)
			}
			if derr == nil {
				leases = append(leases, revLease{r, e.Revision()})
			}
		case waiterKeyPrefix:
			var r waiterRecord
			if derr = strictJSON(e.Value(), &r); derr == nil {
				derr = b.checkNotifyRecord(r.Notify, false)
			}
			if derr == nil {
				waiters = append(waiters, revWaiter{r, e.Revision()})
			}
		}
		if derr != nil {
			b.log.Warn("skipping a bucket entry that cannot be served", "key", e.Key(), "err", derr)
		}
	}
	sort.Slice(waiters, func(i, j int) bool {
		if a, b := waiters[i].rec.Order, waiters[j].rec.Order; a != b {
			return a < b
		}
		return waiters[i].rev < waiters[j].rev
	})

	b.mu.Lock()
	now := b.now()
	fx := &effects{}
	st := b.st
	for _, r := range limits {
		ls := newLimitState(r.Limit)
		ls.bucket.tat = r.TAT
		st.limits[r.Name] = ls
	}
	pendingWaits := map[string]bool{}
	for _, w := range waiters {
		pendingWaits[w.rec.ID] = true
		// Every stored order is taken, also of waiters whose grant is pending.
		st.nextOrder = max(st.nextOrder, w.rec.Order)
	}
	var regrant []*lease
	for _, rl := range leases {
		l := rl.rec.lease(rl.rev)
		if l.waitID != "" && pendingWaits[l.waitID] && !now.Before(l.expires) {
			// Granted, never accepted, and expired since: queue the waiter again.
			fx.purge(leaseKey(l.id))
			continue
		}
		l.names = existing(st, l.names)
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
		if !pendingWaits[rw.rec.ID] {
			continue // its lease exists: the grant is pushed again below
		}
		wt := rw.rec.waiter()
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
	for n := range st.limits {
		st.dispatch(now, fx, n)
		fx.wake = append(fx.wake, n)
	}
	bt := b.applyLocked(fx)
	b.mu.Unlock()
	b.log.Info("state loaded", "limits", len(limits), "leases", len(leases), "waiters", len(waiters), "expired", len(expired))
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		_ = b.finish(bt)
	}()
	return nil
}

// strictJSON decodes a record, refusing fields no record has (a value
// written by something else than a broker).
func strictJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

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

// checkNotifyRecord checks a stored notify subject (optional for leases).
func (b *Broker) checkNotifyRecord(notify string, optional bool) error {
	if notify == "" && optional {
		return nil
	}
	if e := messages.CheckPushSubject(notify, b.opts.prefix); e != nil {
		return e
	}
	return nil
}

// existing keeps the names that are limits in st.
func existing(st *state, names []string) []string {
	out := names[:0:0]
	for _, n := range names {
		if st.limits[n] != nil {
			out = append(out, n)
		}
	}
	return out
}
