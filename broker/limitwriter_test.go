package broker

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

func TestReservedTAT(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rate := func(limit int, decay float64, tat time.Time) *limitState {
		return &limitState{cfg: messages.Limit{Name: "r", Limit: limit, SlotDecayPerSecond: decay, Active: true}, bucket: bucket{tat: tat}}
	}
	cases := []struct {
		name string
		ls   *limitState
		want time.Time
	}{
		{"never used: no reserve", rate(100, 10, time.Time{}), time.Time{}},
		{"concurrency limit: unchanged", rate(100, 0, time.Time{}), time.Time{}},
		// 100 slots at 10/s: the reserve is 25 slots, 2.5 s.
		{"drained bucket: reserve on an empty one", rate(100, 10, now.Add(-time.Hour)), now.Add(2500 * time.Millisecond)},
		{"10 slots taken: 35 stored", rate(100, 10, now.Add(time.Second)), now.Add(3500 * time.Millisecond)},
		{"90 slots taken: a full bucket at most", rate(100, 10, now.Add(9*time.Second)), now.Add(10 * time.Second)},
		{"over-full (limit lowered): the live state", rate(100, 10, now.Add(12*time.Second)), now.Add(12 * time.Second)},
	}
	for _, c := range cases {
		if got := c.ls.reservedTAT(now); !got.Equal(c.want) {
			t.Errorf("%s: reservedTAT = %v, want %v", c.name, got.Sub(now), c.want.Sub(now))
		}
	}
}
