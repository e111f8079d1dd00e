package broker

import (
	"math"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// bucket is the decay state of a rate limit, kept as GCRA keeps it: tat is the
// moment the bucket will be empty. At time t it holds (tat-t)*d slots, so
// decay is continuous and exact to the nanosecond; no write resets it and no
// rounding drops partial progress.
type bucket struct {
	tat time.Time
}

// level is the (fractional) number of undecayed slots at now.
func (b bucket) level(now time.Time, decay float64) float64 {
	if decay <= 0 || !b.tat.After(now) {
		return 0
	}
	return b.tat.Sub(now).Seconds() * decay
}

// occupied is level rounded up: a partly decayed slot is still occupied.
func (b bucket) occupied(now time.Time, decay float64) int {
	return int(math.Ceil(b.level(now, decay) - 1e-9))
}

// fits tells whether occupy slots fit in room slots (limit minus held) now.
func (b bucket) fits(now time.Time, decay float64, room, occupy int) bool {
	if occupy > room {
		return false
	}
	return b.level(now, decay) <= float64(room-occupy)+1e-9
}

// fitsAt is the earliest time occupy slots fit in room, or the zero time when
// they never will without a release (occupy > room).
func (b bucket) fitsAt(now time.Time, decay float64, room, occupy int) time.Time {
	if occupy > room {
		return time.Time{}
	}
	if decay <= 0 {
		return now
	}
	// Round the wait up (the subtrahend down) so that occupy fits at t itself.
	t := b.tat.Add(-seconds(math.Floor(float64(room-occupy)/decay*float64(time.Second)) / float64(time.Second)))
	if t.Before(now) {
		return now
	}
	return t
}

// add puts n slots in the bucket at now.
func (b *bucket) add(now time.Time, decay float64, n int) {
	if decay <= 0 {
		return
	}
	start := b.tat
	if start.Before(now) {
		start = now
	}
	b.tat = start.Add(seconds(float64(n) / decay))
}

// remove takes n slots out again (an admission given back).
func (b *bucket) remove(decay float64, n int) {
	if decay <= 0 || b.tat.IsZero() {
		return
	}
	b.tat = b.tat.Add(-seconds(float64(n) / decay))
}

// rescale keeps the bucket's level when the decay rate changes at now.
func (b *bucket) rescale(now time.Time, oldDecay, newDecay float64) {
	lvl := b.level(now, oldDecay)
	if lvl <= 0 || newDecay <= 0 {
		if newDecay <= 0 {
			b.tat = time.Time{}
		}
		return
	}
	b.tat = now.Add(seconds(lvl / newDecay))
}

// seconds converts to a duration, saturating far inside time.Duration's
// range (a conversion out of range would wrap around); configurations are
// bounded so that it never needs to (validateConfig).
func seconds(s float64) time.Duration {
	const bound = float64(2 * messages.MaxDrain)
	d := math.Round(s * float64(time.Second))
	switch {
	case d > bound || math.IsNaN(d):
		return time.Duration(bound)
	case d < -bound:
		return -time.Duration(bound)
	}
	return time.Duration(d)
}
