package broker

import (
	"math"
	"testing"
	"time"
)

var bt0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func bAt(d time.Duration) time.Time { return bt0.Add(d) }

func bNear(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// TestBucketBurstThenSteady steps a bucket of 5 slots decaying at 2/s.
func TestBucketBurstThenSteady(t *testing.T) {
	const limit, decay = 5, 2.0
	var b bucket
	for i := 0; i < limit; i++ {
		if !b.fits(bt0, decay, limit, 1) {
			t.Fatalf("burst admission %d does not fit", i+1)
		}
		b.add(bt0, decay, 1)
	}
	steps := []struct {
		now      time.Duration
		level    float64
		occupied int
		fits     bool
	}{
		{0, 5, 5, false},
		{100 * time.Millisecond, 4.8, 5, false},
		{499 * time.Millisecond, 4.002, 5, false},
		{500 * time.Millisecond, 4, 4, true},
		{time.Second, 3, 3, true},
		{2500 * time.Millisecond, 0, 0, true},
		{time.Hour, 0, 0, true},
	}
	for _, s := range steps {
		now := bAt(s.now)
		if got := b.level(now, decay); !bNear(got, s.level) {
			t.Errorf("t+%v: level %v, want %v", s.now, got, s.level)
		}
		if got := b.occupied(now, decay); got != s.occupied {
			t.Errorf("t+%v: occupied %d, want %d", s.now, got, s.occupied)
		}
		if got := b.fits(now, decay, limit, 1); got != s.fits {
			t.Errorf("t+%v: fits %v, want %v", s.now, got, s.fits)
		}
	}
	if got := b.fitsAt(bt0, decay, limit, 1); !got.Equal(bAt(500 * time.Millisecond)) {
		t.Errorf("fitsAt = t+%v, want t+500ms", got.Sub(bt0))
	}
	// Steady state: admit each slot the moment it fits; they come 1/decay apart.
	now := bt0
	for i := 1; i <= 20; i++ {
		next := b.fitsAt(now, decay, limit, 1)
		if want := bAt(time.Duration(i) * 500 * time.Millisecond); !next.Equal(want) {
			t.Fatalf("steady admission %d at t+%v, want t+%v", i, next.Sub(bt0), want.Sub(bt0))
		}
		now = next
		b.add(now, decay, 1)
	}
}

// TestBucketFractionalRates checks 0.5/s, 1000/s and rates that are not a
// whole number of nanoseconds per slot: admitting each slot as soon as it
// fits yields exactly limit + decay*T slots in T, with no drift.
func TestBucketFractionalRates(t *testing.T) {
	cases := []struct {
		limit int
		decay float64
		span  time.Duration
	}{
		{1, 0.5, 10 * time.Minute},
		{3, 0.5, time.Hour},
		{10, 1000, 10 * time.Second},
		{5, 3, 10 * time.Minute},
		{2, 700, 10 * time.Second},
		{3, 700, 10 * time.Second},
		{3, 3, 10 * time.Minute},
		{4, 1.0 / 7, 7 * time.Hour},
	}
	for _, c := range cases {
		var b bucket
		now := bt0
		n := 0
		for {
			next := b.fitsAt(now, c.decay, c.limit, 1)
			if next.Sub(bt0) > c.span {
				break
			}
			if !b.fits(next, c.decay, c.limit, 1) {
				t.Fatalf("L=%d d=%v: fitsAt t+%v but it does not fit then", c.limit, c.decay, next.Sub(bt0))
			}
			if b.fits(next.Add(-time.Microsecond), c.decay, c.limit, 1) && next.After(now) {
				t.Fatalf("L=%d d=%v: fits 1µs before fitsAt t+%v", c.limit, c.decay, next.Sub(bt0))
			}
			now = next
			b.add(now, c.decay, 1)
			n++
		}
		want := c.limit + int(math.Floor(c.decay*c.span.Seconds()+1e-9))
		if n != want {
			t.Errorf("L=%d d=%v over %v: %d admissions, want %d", c.limit, c.decay, c.span, n, want)
		}
	}
}

// TestBucketOccupyMany: a request of 3 waits for 3 free slots, no more.
func TestBucketOccupyMany(t *testing.T) {
	const limit, decay = 5, 2.0
	var b bucket
	b.add(bt0, decay, 3)
	if !b.fits(bt0, decay, limit, 2) || b.fits(bt0, decay, limit, 3) {
		t.Fatal("with 3 of 5 taken, 2 must fit and 3 must not")
	}
	// 1 slot must decay: 0.5 s.
	if got := b.fitsAt(bt0, decay, limit, 3); !got.Equal(bAt(500 * time.Millisecond)) {
		t.Fatalf("fitsAt(3) = t+%v, want t+500ms", got.Sub(bt0))
	}
	if got := b.fitsAt(bt0, decay, limit, 6); !got.IsZero() {
		t.Fatalf("occupy > room must never fit, got t+%v", got.Sub(bt0))
	}
	b.add(bAt(500*time.Millisecond), decay, 3)
	if got := b.level(bAt(500*time.Millisecond), decay); !bNear(got, 5) {
		t.Fatalf("level %v, want 5", got)
	}
	// Held slots shrink the room: with 2 held, 3 of the bucket's 5 must decay first.
	if got := b.fitsAt(bAt(500*time.Millisecond), decay, limit-2, 1); !got.Equal(bAt(2 * time.Second)) {
		t.Fatalf("fitsAt with 2 held = t+%v, want t+2s", got.Sub(bt0))
	}
}

// TestBucketAddAfterIdle: a drained bucket starts from now, not from its old tat.
func TestBucketAddAfterIdle(t *testing.T) {
	var b bucket
	b.add(bt0, 1, 2)
	b.add(bAt(time.Hour), 1, 1)
	if got := b.level(bAt(time.Hour), 1); !bNear(got, 1) {
		t.Fatalf("level %v after idle, want 1 (no credit for idle time beyond empty)", got)
	}
	b.remove(1, 1)
	if got := b.level(bAt(time.Hour), 1); got != 0 {
		t.Fatalf("level %v after remove, want 0", got)
	}
}

// TestBucketRescale: changing the decay keeps the level and drains it at the new rate.
func TestBucketRescale(t *testing.T) {
	var b bucket
	b.add(bt0, 1, 4)
	b.rescale(bt0, 1, 2) // level 4 at d=1 -> drains in 2 s at d=2
	steps := []struct {
		now   time.Duration
		level float64
	}{{0, 4}, {time.Second, 2}, {1500 * time.Millisecond, 1}, {2 * time.Second, 0}}
	for _, s := range steps {
		if got := b.level(bAt(s.now), 2); !bNear(got, s.level) {
			t.Errorf("t+%v: level %v, want %v", s.now, got, s.level)
		}
	}
	// Mid-stream: at t+1s the level is 2; halve the rate, it drains in 4 s more.
	b.rescale(bAt(time.Second), 2, 0.5)
	if got := b.level(bAt(time.Second), 0.5); !bNear(got, 2) {
		t.Fatalf("level %v after second rescale, want 2", got)
	}
	if !b.tat.Equal(bAt(5 * time.Second)) {
		t.Fatalf("tat t+%v, want t+5s", b.tat.Sub(bt0))
	}
	// Decay off: the bucket is dropped (a limit without decay has no bucket).
	b.rescale(bAt(2*time.Second), 0.5, 0)
	if !b.tat.IsZero() {
		t.Fatalf("tat %v after decay 0, want zero", b.tat)
	}
	b.rescale(bAt(2*time.Second), 0, 3)
	if got := b.level(bAt(2*time.Second), 3); got != 0 {
		t.Fatalf("level %v after decay back on, want 0", got)
	}
}
