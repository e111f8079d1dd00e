package broker

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// TestWaitMemoryRandomized (guard, expected to pass): ids remembered
// at random times with random gaps (idle minutes, bursts, lookups without
// remembers) are found until ttl after they were remembered, with the value
// of their admission even after a later cancel.
func TestWaitMemoryRandomized(t *testing.T) {
	const ttl = 2 * time.Minute
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		m := newWaitMemory(ttl)
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int63n(int64(time.Hour))))
		type rec struct {
			at  time.Time
			n   int
			alt int // also acceptable: a cancel after an admission older than the ttl
		}
		at := map[string]rec{}
		for i := 0; i < 400; i++ {
			switch rng.Intn(10) {
			case 0:
				now = now.Add(time.Duration(rng.Int63n(int64(5 * time.Minute))))
			case 1:
				now = now.Add(time.Duration(rng.Int63n(int64(ttl / 2))))
			default:
				now = now.Add(time.Duration(rng.Int63n(int64(3 * time.Second))))
			}
			id := fmt.Sprintf("w%d", rng.Intn(300))
			n := rng.Intn(3)
			if rng.Intn(4) != 0 { // else only lookups
				m.remember(now, id, n)
				alt := n
				if old, ok := at[id]; ok && n == 0 && old.n > 0 {
					if now.Sub(old.at) < ttl {
						n, alt = old.n, old.n // a cancel after an admission keeps it
					} else {
						alt = old.n // may still be remembered
					}
				}
				at[id] = rec{now, n, alt}
			}
			for old, r := range at {
				got, ok := m.lookup(old)
				age := now.Sub(r.at)
				if age < ttl && (!ok || (got != r.n && got != r.alt)) {
					t.Fatalf("round %d step %d: %s remembered %v ago with %d: lookup = %d, %v", round, i, old, age, r.n, got, ok)
				}
			}
		}
	}
}

// TestRetriedAdmissionAnswersCount (guard, expected to pass): a
// counted rate try retried with its wait id is answered with the number it
// was admitted, also after a cancel, and is not admitted again.
func TestRetriedAdmissionAnswersCount(t *testing.T) {
	sim := newRateSim(t)
	sim.create("x", 10, 1)
	req := func() *messages.AcquireRequest {
		return &messages.AcquireRequest{Occupy: 2, Rate: true, Try: true, Count: 7, WaitID: "w"}
	}
	fx := &effects{}
	r := sim.st.acquire(sim.now, "x", req(), messages.Msgpack, fx)
	if r.reply.Admitted != 5 {
		t.Fatalf("first: %+v", r.reply)
	}
	sim.now = sim.now.Add(90 * time.Second)
	sim.st.cancel(sim.now, "w", &effects{}) // a cancel after the admission
	sim.now = sim.now.Add(29 * time.Second) // 119 s after the admission
	sim.st.cancel(sim.now, "other", &effects{})
	fx = &effects{}
	r = sim.st.acquire(sim.now, "x", req(), messages.Msgpack, fx)
	if r.reply.Error != nil || r.reply.Admitted != 5 || len(fx.events) != 0 {
		t.Fatalf("retry: %+v, events %d", r.reply, len(fx.events))
	}
	if len(fx.dirty) != 1 {
		t.Fatalf("retry marked %v dirty, want x (a covering record)", fx.dirty)
	}
}
