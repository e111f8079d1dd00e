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
// a wait id, so the memory is kept small: ids are kept as 128-bit digests
// (no string stays alive) in generations of ttl/2, dropped whole. An id is
// kept between ttl and 1.5 ttl.
type waitMemory struct {
	ttl   time.Duration
	seeds [2]maphash.Seed
	// gens[0] is the current generation, begun at since.
	gens  [3]map[waitDigest]int32
	since time.Time
}

type waitDigest [2]uint64

func newWaitMemory(ttl time.Duration) *waitMemory {
	m := &waitMemory{ttl: ttl, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	for i := range m.gens {
		m.gens[i] = map[waitDigest]int32{}
	}
	return m
}

func (m *waitMemory) digest(id string) waitDigest {
	return waitDigest{maphash.String(m.seeds[0], id), maphash.String(m.seeds[1], id)}
}

// lookup tells whether id is remembered, and its value.
func (m *waitMemory) lookup(id string) (n int, ok bool) {
	d := m.digest(id)
	for _, g := range m.gens {
		if v, ok := g[d]; ok {
			return int(v), true
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
			if v, ok := g[d]; ok {
				n = int(v)
				break
			}
		}
	}
	m.gens[0][d] = int32(n)
}

// rotate begins a new generation every ttl/2, dropping the oldest.
func (m *waitMemory) rotate(now time.Time) {
	step := m.ttl / 2
	if m.since.IsZero() {
		m.since = now
	}
	for now.Sub(m.since) >= step {
		m.gens[2] = m.gens[1]
		m.gens[1] = m.gens[0]
		m.gens[0] = map[waitDigest]int32{}
		m.since = m.since.Add(step)
		if now.Sub(m.since) >= 3*step { // idle for long: everything is older than ttl
			for i := range m.gens {
				m.gens[i] = map[waitDigest]int32{}
			}
			m.since = now
		}
	}
}
