package broker

import (
	"container/heap"
	"fmt"
	"sort"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Per-key limits (PROTOCOL.md §15). A limit created with per_key is a
// family: it is never acquired itself; each key gets a limit of its own,
// with the family's configuration, named "<family>.<key>" in the state (a
// name no plain limit can have: names have no dots), so that queues,
// leases, dispatch and expiry treat it as any limit. A key's limit is
// created by the first acquisition that names it and dropped as soon as it
// is idle: no holder, no waiter, its decay bucket drained. Its config is
// never stored: only a rate key's decay state is journaled while it is not
// drained (the record is purged when the key is dropped; one that outlives
// a crash is found drained, or is the reserve of §12, and is dropped at
// start), and its leases and waiters are stored as any others, under its
// reference.

// isKey tells whether ls is the limit of one key of a per-key family.
func (ls *limitState) isKey() bool { return ls.family != nil }

// limitRef is a limit reference as error messages show it: "db", or
// "tenant" key "acme" for a key of a per-key limit.
func limitRef(ref string) string {
	if name, key, keyed := messages.SplitKeyed(ref); keyed {
		return fmt.Sprintf("%q key %q", name, key)
	}
	return fmt.Sprintf("%q", ref)
}

// resolve finds the limit of a reference for an acquisition: a plain name,
// or a key of a family (created when missing; dropIdle drops it again if
// the acquisition leaves it idle). It returns nil when the limit, or the
// key's family, does not exist; an error when a key names a limit that is
// not a family, or a family is named without a key.
func (s *state) resolve(ref string) (*limitState, *messages.Error) {
	name, key, keyed := messages.SplitKeyed(ref)
	if !keyed {
		ls := s.limits[ref]
		if ls != nil && ls.cfg.PerKey {
			return nil, messages.Errorf(messages.CodeInvalidArgument, "limit %q is per-key: acquire one of its keys (client.WithKey, slotctl run %s --key KEY, subject ….%s.<key>)", ref, ref, ref)
		}
		return ls, nil
	}
	if ls := s.limits[ref]; ls != nil {
		return ls, nil
	}
	fam := s.limits[name]
	if fam == nil {
		return nil, nil
	}
	if !fam.cfg.PerKey {
		return nil, messages.Errorf(messages.CodeInvalidArgument, "limit %q is not per-key: acquire it without a key, or create a per-key limit (slotctl create NAME --limit N --per-key)", name)
	}
	if !fam.cfg.Active {
		// Not enforced: a key limit only for the acquisition to see so,
		// not kept (nor counted against the live keys).
		ls := newLimitState(fam.cfg)
		ls.cfg.Name = ref
		return ls, nil
	}
	if s.maxKeys > 0 && s.liveKeys >= s.maxKeys {
		return nil, messages.Errorf(messages.CodeTooManyWaiters, "the broker has %d live keys of per-key limits, its maximum: retry when some are idle, or raise --max-live-keys", s.liveKeys)
	}
	return s.addKey(fam, key), nil
}

// addKey creates key's limit in family fam.
func (s *state) addKey(fam *limitState, key string) *limitState {
	cfg := fam.cfg
	cfg.Name = messages.KeyedName(fam.cfg.Name, key)
	ls := newLimitState(cfg)
	ls.family = fam
	if fam.keys == nil {
		fam.keys = map[string]*limitState{}
	}
	fam.keys[key] = ls
	s.limits[cfg.Name] = ls
	s.liveKeys++
	return ls
}

// idle tells whether a key's limit keeps nothing that a new one would not.
func (ls *limitState) idle(now time.Time) bool {
	return ls.held == 0 && len(ls.leases) == 0 && ls.queue.Len() == 0 && ls.bucket.occupied(now, ls.cfg.SlotDecayPerSecond) == 0
}

// dropIdle drops the idle key limits among names; for a rate key whose
// bucket is still draining it asks for a wake-up when it has drained
// (wakeAt), when it is dropped.
func (s *state) dropIdle(now time.Time, fx *effects, names ...string) {
	for _, n := range names {
		ls := s.limits[n]
		if ls == nil || !ls.isKey() {
			continue
		}
		if !ls.idle(now) {
			if ls.cfg.SlotDecayPerSecond > 0 {
				fx.wake = append(fx.wake, n)
			}
			continue
		}
		s.dropKey(ls, fx)
	}
}

// dropKey forgets key limit ls; a rate key's journaled decay state goes too.
func (s *state) dropKey(ls *limitState, fx *effects) {
	name := ls.cfg.Name
	if s.limits[name] != ls {
		return
	}
	delete(s.limits, name)
	s.liveKeys--
	_, key, _ := messages.SplitKeyed(name)
	if ls.family.keys[key] == ls {
		delete(ls.family.keys, key)
	}
	if ls.stored {
		fx.purge(limitKey(name))
	}
	// Its timer stops (the purge makes the Broker forget the record it
	// sent; a key never stored has none).
	fx.wake = append(fx.wake, name)
}

// drainedAt is, for a key limit with nothing but a draining bucket, when
// the bucket is empty: it is dropped then (zero otherwise).
func (ls *limitState) drainedAt(now time.Time) time.Time {
	if !ls.isKey() || ls.held != 0 || ls.queue.Len() != 0 || ls.cfg.SlotDecayPerSecond <= 0 || !ls.bucket.tat.After(now) {
		return time.Time{}
	}
	return ls.bucket.tat
}

// updateKeys applies a family's new configuration to its live keys and
// lets their queues move; it returns their names.
func (s *state) updateKeys(now time.Time, fam *limitState, fx *effects) []string {
	names := make([]string, 0, len(fam.keys))
	for _, ls := range fam.keys {
		ls.bucket.rescale(now, ls.cfg.SlotDecayPerSecond, fam.cfg.SlotDecayPerSecond)
		name := ls.cfg.Name
		ls.cfg = fam.cfg
		ls.cfg.Name = name
		names = append(names, name)
		if fam.cfg.SlotDecayPerSecond > 0 {
			fx.dirty = append(fx.dirty, name)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		ls := s.limits[n]
		if ls == nil {
			continue
		}
		if !ls.cfg.Active {
			s.unenforce(now, ls, fx)
		}
		s.failTooLarge(now, ls, fx)
		s.dispatch(now, fx, n)
	}
	return names
}

// removeKeys deletes a family's live keys with it: their waiters fail,
// their leases are voided.
func (s *state) removeKeys(now time.Time, fam *limitState, fx *effects) {
	keys := make([]*limitState, 0, len(fam.keys))
	for _, ls := range fam.keys {
		keys = append(keys, ls)
	}
	for _, ls := range keys {
		if s.limits[ls.cfg.Name] != ls {
			continue // dropped idle while another key was removed
		}
		s.liveKeys--
		s.removeLimit(now, ls, fx)
		fx.wake = append(fx.wake, ls.cfg.Name) // its timer stops
		if ls.stored {
			fx.purge(limitKey(ls.cfg.Name))
		}
	}
	fam.keys = nil
}

// keyInfos lists a family's first max live keys, sorted. Its cost is one
// pass over the keys and a sort of max of them: a family of a million
// live keys is listed without sorting them all under the broker's lock.
func (s *state) keyInfos(now time.Time, fam *limitState, max int) ([]messages.KeyInfo, int) {
	keys := firstKeys(fam.keys, max)
	out := make([]messages.KeyInfo, 0, len(keys))
	for _, k := range keys {
		ls := fam.keys[k]
		out = append(out, messages.KeyInfo{Key: k, ActiveSlots: ls.activeSlots(now), HoldersTotal: len(ls.leases), WaitersTotal: ls.queue.Len()})
	}
	return out, len(fam.keys)
}

// firstKeys is the max smallest keys of m, sorted.
func firstKeys(m map[string]*limitState, max int) []string {
	if max <= 0 {
		return nil
	}
	// A max-heap of the smallest keys seen: a key is pushed only when it
	// is below the largest kept, so most keys cost one comparison.
	h := &keyHeap{}
	for k := range m {
		switch {
		case h.Len() < max:
			heap.Push(h, k)
		case k < (*h)[0]:
			(*h)[0] = k
			heap.Fix(h, 0)
		}
	}
	keys := []string(*h)
	sort.Strings(keys)
	return keys
}

// keyHeap is a max-heap of strings (container/heap).
type keyHeap []string

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *keyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// restoreKeys attaches the key limits rebuilt at start to their families:
// a key whose family is gone or no longer per-key is dropped, and so is
// one left idle (a decay record that outlived its purge).
func (s *state) restoreKeys(fx *effects) {
	var refs []string
	for name := range s.limits {
		if _, _, keyed := messages.SplitKeyed(name); keyed {
			refs = append(refs, name)
		}
	}
	for _, ref := range refs {
		loaded := s.limits[ref]
		delete(s.limits, ref)
		fam, key, _ := messages.SplitKeyed(ref)
		f := s.limits[fam]
		if f == nil || !f.cfg.PerKey {
			fx.purge(limitKey(ref))
			continue
		}
		// The record gives the decay state only: the config is the family's.
		k := s.addKey(f, key)
		k.bucket.tat, k.stored = loaded.bucket.tat, true
	}
}

// ensureKey makes sure the limit of reference ref exists at start when it
// is a key of an existing family (its leases and waiters are stored, its
// limit is not); it reports whether the reference names a limit.
func (s *state) ensureKey(ref string) bool {
	if s.limits[ref] != nil {
		return true
	}
	name, key, keyed := messages.SplitKeyed(ref)
	if !keyed {
		return false
	}
	fam := s.limits[name]
	if fam == nil || !fam.cfg.PerKey {
		return false
	}
	s.addKey(fam, key)
	return true
}
