package broker

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/slotbroker/slotbroker/messages"
)

// The journal is the state's write-ahead log: every change the state makes
// must be in the record changes it returns, or a restart loses it. This
// property test drives random operation sequences through the state with a
// fake clock, journals each step's record changes as the Broker does, and
// checks that (1) replaying the journal from any snapshot point reaches the
// same record set as applying it all, and (2) restoring a state from that
// record set (the code a start runs) gives the live state back: the same
// limits and decay states, leases with their tokens, queues in order, and a
// fencing-token counter that never goes back.

// replaySim is the state under test with its journal.
type replaySim struct {
	st      *state
	now     time.Time
	log     [][]journalOp
	pending []string // wait ids of grants pushed and not yet answered
}

// record journals the step's changes: its puts and deletions, and the
// current record of each limit it marked dirty (the Broker writes those
// through markDirty; exact here, reserved ahead there).
func (sim *replaySim) record(fx *effects) {
	var ops []journalOp
	for _, op := range fx.ops {
		ops = append(ops, journalOp{Key: op.key, Val: op.val})
	}
	for _, n := range dedupe(fx.dirty) {
		if ls := sim.st.limits[n]; ls != nil {
			ops = append(ops, journalOp{Key: limitKey(n), Val: ls.record()})
			ls.stored = ls.isKey() // as markDirty does
		}
	}
	for _, g := range fx.grants {
		sim.pending = append(sim.pending, g.w.id)
	}
	sim.log = append(sim.log, ops)
}

func (sim *replaySim) step(fn func(fx *effects)) {
	fx := &effects{}
	fn(fx)
	sim.record(fx)
}

var replayStats struct{ runs, leases, waiters int }

// replayNames: three limits, and two keys of "k", created per-key.
var replayNames = []string{"a", "b", "c", "k", "k.x", "k.y"}

func (sim *replaySim) leaseIDs() []string {
	ids := make([]string, 0, len(sim.st.leases))
	for id := range sim.st.leases {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (sim *replaySim) waiterIDs() []string {
	ids := make([]string, 0, len(sim.st.waiters))
	for id, w := range sim.st.waiters {
		if !w.granted {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// settle answers every pushed grant, as the Broker does within the grant
// timeout, and expires what is due and dispatches, as its timers do.
func (sim *replaySim) settle(rt *rapid.T) {
	for len(sim.pending) > 0 {
		id := sim.pending[0]
		sim.pending = sim.pending[1:]
		accept := rapid.Bool().Draw(rt, "accept")
		sim.step(func(fx *effects) {
			if accept {
				sim.st.accept(sim.now, id, fx)
			} else {
				sim.st.refuse(sim.now, id, fx)
			}
		})
	}
	sim.step(func(fx *effects) {
		for _, id := range sim.leaseIDs() {
			sim.st.expire(sim.now, id, fx)
		}
		for _, n := range replayNames {
			sim.st.dispatch(sim.now, fx, n)
		}
	})
}

func TestReplayFromAnySnapshotReachesTheLiveState(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := 0
		sim := &replaySim{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		sim.st = newState(ttlBounds{def: 10 * time.Second, min: time.Second, max: time.Hour}, func() string {
			n++
			return fmt.Sprintf("id%d", n)
		})
		sim.st.acceptSlack = 3 * time.Second
		steps := rapid.IntRange(1, 120).Draw(rt, "steps")
		for range steps {
			name := rapid.SampledFrom(replayNames).Draw(rt, "name")
			switch rapid.IntRange(0, 11).Draw(rt, "op") {
			case 0:
				decay := rapid.SampledFrom([]float64{0, 0, 0.5, 2}).Draw(rt, "decay")
				limit := rapid.IntRange(1, 4).Draw(rt, "limit")
				sim.step(func(fx *effects) {
					sim.st.create(sim.now, name, &messages.CreateRequest{Limit: limit, SlotDecayPerSecond: decay, PerKey: name == "k"}, fx)
				})
			case 1, 2, 3, 10, 11:
				others := rapid.SliceOfNDistinct(rapid.SampledFrom(replayNames), 0, 1, rapid.ID[string]).Draw(rt, "others")
				rate := false
				if ls := sim.st.limits[name]; ls != nil && ls.cfg.SlotDecayPerSecond > 0 && len(others) == 0 {
					rate = rapid.Bool().Draw(rt, "rate")
				}
				req := &messages.AcquireRequest{Names: others, Occupy: rapid.IntRange(1, 2).Draw(rt, "occupy"),
					Try: rapid.IntRange(0, 3).Draw(rt, "try") == 0, Rate: rate,
					TTLMillis: int64(rapid.IntRange(1, 20).Draw(rt, "ttl_s")) * 1000}
				if !req.Try {
					req.Priority = rapid.IntRange(0, 2).Draw(rt, "priority")
					req.Notify = "_INBOX.sim." + fmt.Sprint(n)
					req.WaitID = fmt.Sprintf("w%d", len(sim.log))
				}
				sim.step(func(fx *effects) { sim.st.acquire(sim.now, name, req, messages.Msgpack, fx) })
			case 4:
				if ids := sim.leaseIDs(); len(ids) > 0 {
					id := rapid.SampledFrom(ids).Draw(rt, "lease")
					sim.step(func(fx *effects) { sim.st.release(sim.now, id, fx) })
				}
			case 5:
				if ids := sim.leaseIDs(); len(ids) > 0 {
					id := rapid.SampledFrom(ids).Draw(rt, "lease")
					sim.step(func(fx *effects) { sim.st.renew(sim.now, id, 0, fx) })
				}
			case 6:
				if ids := sim.waiterIDs(); len(ids) > 0 {
					id := rapid.SampledFrom(ids).Draw(rt, "wait")
					sim.step(func(fx *effects) { sim.st.cancel(sim.now, id, fx) })
				}
			case 7:
				sim.settle(rt)
				sim.now = sim.now.Add(time.Duration(rapid.IntRange(0, 15000).Draw(rt, "ms")) * time.Millisecond)
				sim.settle(rt)
			case 8:
				limit := rapid.IntRange(0, 5).Draw(rt, "new_limit")
				active := rapid.Bool().Draw(rt, "active")
				sim.step(func(fx *effects) {
					sim.st.update(sim.now, name, &messages.UpdateRequest{Limit: &limit, Active: &active}, fx)
				})
			case 9:
				sim.step(func(fx *effects) { sim.st.remove(sim.now, name, fx) })
			}
		}
		sim.settle(rt)

		live := newRecordView()
		var maxToken uint64
		for i, ops := range sim.log {
			live.apply(ops, uint64(i+1))
			for _, op := range ops {
				maxToken = max(maxToken, tokenOf(op))
			}
		}
		want := live.records()

		// (1) From any snapshot point, the rest of the journal reaches the same records.
		k := rapid.IntRange(0, len(sim.log)).Draw(rt, "snapshot")
		snap := newRecordView()
		for i, ops := range sim.log[:k] {
			snap.apply(ops, uint64(i+1))
		}
		replayed := newRecordView()
		replayed.apply(opsOf(snap.records()), uint64(k))
		for i, ops := range sim.log[k:] {
			replayed.apply(ops, uint64(k+i+1))
		}
		if got := replayed.records(); !sameRecords(got, want) {
			rt.Fatalf("replay from snapshot at step %d: %d records, want %d", k, len(got), len(want))
		}

		// (2) A state restored from the records is the live state.
		restored := newState(sim.st.ttl, func() string { return "restored" })
		restored.acceptSlack = sim.st.acceptSlack
		loaded := decodeRecords(want, messages.DefaultPrefix, func(msg, key string, detail any) {
			rt.Fatalf("%s: %s: %v", msg, key, detail)
		})
		restoreState(restored, loaded, maxToken, sim.now, false, &effects{})
		compareStates(rt, sim.st, restored)
		replayStats.leases += len(sim.st.leases)
		replayStats.waiters += len(sim.st.waiters)
		replayStats.runs++
	})
	t.Logf("%+v", replayStats)
}

func sameRecords(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

// compareStates checks that restored holds what live holds.
func compareStates(rt *rapid.T, live, restored *state) {
	if restored.lastToken != live.lastToken {
		rt.Fatalf("fencing token counter restored at %d, live %d", restored.lastToken, live.lastToken)
	}
	if restored.liveKeys != live.liveKeys {
		rt.Fatalf("%d live keys restored, %d live", restored.liveKeys, live.liveKeys)
	}
	if len(restored.limits) != len(live.limits) {
		rt.Fatalf("%d limits restored, %d live", len(restored.limits), len(live.limits))
	}
	for name, ls := range live.limits {
		rs := restored.limits[name]
		if rs == nil {
			rt.Fatalf("limit %s not restored", name)
		}
		rc, lc := rs.cfg, ls.cfg
		if rc.Limit != lc.Limit || rc.SlotDecayPerSecond != lc.SlotDecayPerSecond || rc.Active != lc.Active {
			rt.Fatalf("limit %s restored %+v, live %+v", name, rc, lc)
		}
		if rs.held != ls.held || !rs.bucket.tat.Equal(ls.bucket.tat) {
			rt.Fatalf("limit %s restored held %d tat %v, live held %d tat %v", name, rs.held, rs.bucket.tat, ls.held, ls.bucket.tat)
		}
		if rq, lq := queueIDs(rs), queueIDs(ls); rq != lq {
			rt.Fatalf("limit %s queue restored %s, live %s", name, rq, lq)
		}
	}
	if len(restored.leases) != len(live.leases) {
		rt.Fatalf("%d leases restored, %d live", len(restored.leases), len(live.leases))
	}
	for id, l := range live.leases {
		r := restored.leases[id]
		// An acceptance within the slack rewrites nothing: the stored
		// deadline may be later than the live one by up to the slack,
		// never earlier.
		if r == nil || r.token != l.token || r.occupy != l.occupy || fmt.Sprint(r.names) != fmt.Sprint(l.names) ||
			r.expires.Before(l.expires) || r.expires.After(l.expires.Add(live.acceptSlack)) || r.pending != l.pending {
			rt.Fatalf("lease %s restored %+v, live %+v", id, r, l)
		}
	}
}

func queueIDs(ls *limitState) string {
	var ids []string
	ls.queue.inOrder(time.Time{}, 0, func(w *waiter) bool {
		ids = append(ids, w.id)
		return true
	})
	return fmt.Sprint(ids)
}
