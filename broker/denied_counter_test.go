package broker

import (
	"math"
	"testing"

	"github.com/slotbroker/slotbroker/messages"
)

// TestDeniedSlotsDoNotWrap: denied_slots adds (count - admitted) × occupy
// for every refused request (state_acquire.go), up to 1000 × 1e9 = 1e12 per
// request on a rate limit of 1e9 slots (a byte bucket, say). About 9.2
// million such refusals, a few minutes of try requests from one client,
// overflow the int64 and `slotctl inspect` shows a negative count of denied
// slots. The counter is set near its end here instead of sending those
// millions of requests; it must saturate, never wrap.
func TestDeniedSlotsDoNotWrap(t *testing.T) {
	st, now := fakeState(t)
	if r := st.create(*now, "bytes", &messages.CreateRequest{Limit: messages.MaxLimit, SlotDecayPerSecond: 1_000_000}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
	acquireOK(t, st, *now, "bytes", messages.AcquireRequest{Occupy: messages.MaxLimit, Rate: true, Try: true})
	st.limits["bytes"].denied = math.MaxInt64 - 1_000_000_000_000 + 1 // ~9.2 million refusals so far

	res := st.acquire(*now, "bytes", &messages.AcquireRequest{Occupy: messages.MaxLimit, Count: messages.MaxCount, Rate: true, Try: true}, messages.Msgpack, &effects{})
	if res.reply.Error == nil || res.reply.Error.Code != messages.CodeNoSlots {
		t.Fatalf("the counted request on the full bucket: %+v, want no_slots", res.reply)
	}
	info := st.get(*now, "bytes")
	if info.Limit.DeniedSlots < 0 {
		t.Errorf("denied_slots wrapped around to %d after one more refusal of %d × %d slots", info.Limit.DeniedSlots, messages.MaxCount, messages.MaxLimit)
	}
}
