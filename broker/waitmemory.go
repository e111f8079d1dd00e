package broker

import (
	"hash/maphash"
	"time"
)

// waitMemory remembers wait ids for at least its ttl: the ones a cancel
// found nothing for (value 0) and rate admissions (value: how many
// admissions they got). Both refuse or answer a late or retried acquire.
//
// A busy rate limit admits tens of thousands of callers a second, each with
// a wait id, so the memory is kept small: ids are kept as 96-bit digests
// (no string stays alive; a false match is about 2^-96 likely per pair of
// ids; 16 bytes with the value) in generations of ttl/4 dropped whole.
// An id is kept between ttl and 1.25 ttl.
type waitMemory struct {
	ttl   time.Duration
	seeds [2]maphash.Seed // hi and lo of the digest
	// gens[0] is the current generation, begun at since.
	gens  [waitGens]waitGen
	since time.Time
}

// waitGens is how many generations are kept: ttl is waitGens-1 of them.
const waitGens = 5

// waitGen is one generation, keyed by the high 64 bits of the digest.
type waitGen map[uint64]waitEntry

// waitEntry is the rest of an id's digest and its value: with the key, a
// 16-byte map slot. Two ids whose high bits match (about 2^-64 likely per
// pair) share a slot: the later one is kept, the other forgotten early.
type waitEntry struct {
	lo uint32
	n  int32
}

func newWaitGen() waitGen { return waitGen{} }

// waitDigest is 96 bits of an id's digest.
type waitDigest struct {
	hi uint64
	lo uint32
}

func (g waitGen) get(d waitDigest) (int, bool) {
	if e, ok := g[d.hi]; ok && e.lo == d.lo {
		return int(e.n), true
	}
	return 0, false
}

func newWaitMemory(ttl time.Duration) *waitMemory {
	m := &waitMemory{ttl: ttl, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	for i := range m.gens {
		m.gens[i] = newWaitGen()
	}
	return m
}

func (m *waitMemory) digest(id string) waitDigest {
	return waitDigest{maphash.String(m.seeds[0], id), uint32(maphash.String(m.seeds[1], id))}
}

// lookup tells whether id is remembered, and its value.
func (m *waitMemory) lookup(id string) (n int, ok bool) {
	d := m.digest(id)
	for _, g := range m.gens {
		if n, ok := g.get(d); ok {
			return n, true
		}
	}
	return 0, false
}

// remember keeps id with n from now on. A cancel (n = 0) of a remembered
// admission keeps the admission.
func (m *waitMemory) remember(now time.Time, id string, n int) {
	m.rotate(now)
	d := m.digest(id)
	if n == 0 {
		for _, g := range m.gens {
			if v, ok := g.get(d); ok {
				n = v
				break
			}
		}
	}
	m.gens[0][d.hi] = waitEntry{lo: d.lo, n: int32(n)}
}

// size is how many entries are held (an id remembered in two generations
// counts twice).
func (m *waitMemory) size() int {
	n := 0
	for _, g := range m.gens {
		n += len(g)
	}
	return n
}

// rotate begins a new generation every ttl/(waitGens-1), dropping the oldest.
func (m *waitMemory) rotate(now time.Time) {
	step := m.ttl / (waitGens - 1)
	if m.since.IsZero() {
		m.since = now
	}
	for now.Sub(m.since) >= step {
		if now.Sub(m.since) >= waitGens*step { // idle for long: everything is older than ttl
			for i := range m.gens {
				m.gens[i] = newWaitGen()
			}
			m.since = now
			return
		}
		copy(m.gens[1:], m.gens[:waitGens-1])
		m.gens[0] = newWaitGen()
		m.since = m.since.Add(step)
	}
}
