package broker

import (
	"crypto/rand"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/slotbroker/slotbroker/messages"
)

// The cost of per-key limits in the state machine alone (no network, no
// store): a key's first use against an acquisition of a limit that exists,
// and the memory a live key keeps against a lease on a plain limit.
// BENCHMARKS.md ("Per-key limits and priorities") has the figures.

// benchState is a state as the Broker makes it (random ids, rand.Text)
// at a fixed fake time.
func benchState() (*state, time.Time) {
	st := newState(ttlBounds{def: 10 * time.Second, min: time.Second, max: time.Hour}, rand.Text)
	return st, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
}

func benchCreate(tb testing.TB, st *state, now time.Time, name string, req messages.CreateRequest) {
	tb.Helper()
	if r := st.create(now, name, &req, &effects{}); r.Error != nil {
		tb.Fatal(r.Error)
	}
}

// settleWakes does what the Broker does after every change: it asks for
// the wake-up time of each limit the change names (broker.go, fx.wake).
func settleWakes(st *state, now time.Time, fx *effects) {
	for _, n := range dedupe(fx.wake) {
		st.wakeAt(now, n)
	}
}

// tryHold takes one slot of ref without waiting, as a TryAcquire does.
func tryHold(tb testing.TB, st *state, now time.Time, ref string) *lease {
	tb.Helper()
	fx := &effects{}
	res := st.acquire(now, ref, &messages.AcquireRequest{Occupy: 1, Try: true}, messages.Msgpack, fx)
	if res.lease == nil {
		tb.Fatalf("try acquire %s: %+v", ref, res.reply)
	}
	settleWakes(st, now, fx)
	return res.lease
}

func benchRelease(st *state, now time.Time, id string) {
	fx := &effects{}
	st.release(now, id, fx)
	settleWakes(st, now, fx)
}

// BenchmarkKeyFirstUse is a try acquisition of one slot and its release:
// on a plain limit (the baseline), on a key that is already live (another
// lease keeps it), and on a new key each time (its limit is created by the
// acquisition and dropped by the release). First use costs new-key ÷ plain.
func BenchmarkKeyFirstUse(b *testing.B) {
	b.Run("limit=plain", func(b *testing.B) {
		st, now := benchState()
		benchCreate(b, st, now, "db", messages.CreateRequest{Limit: 1})
		b.ReportAllocs()
		for b.Loop() {
			benchRelease(st, now, tryHold(b, st, now, "db").id)
		}
	})
	b.Run("limit=live-key", func(b *testing.B) {
		st, now := benchState()
		benchCreate(b, st, now, "tenant", messages.CreateRequest{Limit: 2, PerKey: true})
		tryHold(b, st, now, "tenant.live")
		b.ReportAllocs()
		for b.Loop() {
			benchRelease(st, now, tryHold(b, st, now, "tenant.live").id)
		}
		if n := len(st.limits["tenant"].keys); n != 1 {
			b.Fatalf("%d live keys, want 1", n)
		}
	})
	b.Run("limit=new-key", func(b *testing.B) {
		st, now := benchState()
		benchCreate(b, st, now, "tenant", messages.CreateRequest{Limit: 1, PerKey: true})
		// Each key is dropped by its release, so a name comes back new; the
		// names are made beforehand, as the Broker has them from the subject.
		refs := make([]string, 4096)
		for i := range refs {
			refs[i] = "tenant.k" + strconv.Itoa(i)
		}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			benchRelease(st, now, tryHold(b, st, now, refs[i%len(refs)]).id)
			i++
		}
		if len(st.limits) != 1 || len(st.limits["tenant"].keys) != 0 {
			b.Fatalf("%d limits and %d live keys left, want the family alone", len(st.limits), len(st.limits["tenant"].keys))
		}
	})
}

// heapInUse is the live heap after a full collection, and the count of
// allocations so far.
func heapInUse() (bytes, mallocs uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.Mallocs
}

// liveHeap is what holding n leases keeps on the heap: each on a key of
// its own of a per-key limit (keyed), or all on one plain limit of n
// slots. It also reports what is left once every lease is released.
type liveHeap struct {
	perLease, allocsPerLease, leftPerLease, nsPerLease float64
}

func measureLiveHeap(b *testing.B, n int, keyed bool) liveHeap {
	st, now := benchState()
	ref := func(int) string { return "db" }
	if keyed {
		benchCreate(b, st, now, "tenant", messages.CreateRequest{Limit: 1, PerKey: true})
		// The name is made here and not kept by the benchmark: whatever of
		// it the state keeps counts, as it would for a subject's name.
		ref = func(i int) string { return "tenant.k" + strconv.Itoa(i) }
	} else {
		benchCreate(b, st, now, "db", messages.CreateRequest{Limit: n})
	}
	ids := make([]string, 0, n)
	before, mallocs := heapInUse()
	start := time.Now()
	for i := range n {
		ids = append(ids, tryHold(b, st, now, ref(i)).id)
	}
	took := time.Since(start)
	held, heldMallocs := heapInUse()
	for i, id := range ids {
		benchRelease(st, now, id)
		ids[i] = "" // the id is the state's to keep or free
	}
	left, _ := heapInUse()
	if keyed && (len(st.limits) != 1 || len(st.limits["tenant"].keys) != 0) {
		b.Fatalf("%d limits and %d live keys after releasing all, want the family alone", len(st.limits), len(st.limits["tenant"].keys))
	}
	if len(st.leases) != 0 {
		b.Fatalf("%d leases after releasing all", len(st.leases))
	}
	runtime.KeepAlive(st)
	runtime.KeepAlive(ids)
	diff := func(a, b uint64) float64 { return float64(int64(a-b)) / float64(n) }
	return liveHeap{
		perLease:       diff(held, before),
		allocsPerLease: diff(heldMallocs, mallocs),
		leftPerLease:   diff(left, before),
		nsPerLease:     float64(took.Nanoseconds()) / float64(n),
	}
}

// BenchmarkLiveKeyMemory measures the heap that n live keys keep, each
// holding one lease (B/key), against n leases on one plain limit
// (B/lease-plain), measured in the same iteration: the difference
// (B/key-overhead) is the key's own limit, map entries and name. B/key-idle
// and B/lease-plain-idle are what is left per key or lease once all are
// released (the keys are dropped: the family is the only limit left; what
// is left is the tables of the maps, which Go never shrinks, sized for the
// most entries they had); ns/key and ns/lease-plain the time to take each
// while the heap grows (a first use for a key), collections included.
func BenchmarkLiveKeyMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run("keys="+strconv.Itoa(n), func(b *testing.B) {
			var plain, keyed liveHeap
			iters := 0
			for b.Loop() {
				p := measureLiveHeap(b, n, false)
				k := measureLiveHeap(b, n, true)
				plain.perLease += p.perLease
				plain.allocsPerLease += p.allocsPerLease
				plain.leftPerLease += p.leftPerLease
				plain.nsPerLease += p.nsPerLease
				keyed.perLease += k.perLease
				keyed.allocsPerLease += k.allocsPerLease
				keyed.leftPerLease += k.leftPerLease
				keyed.nsPerLease += k.nsPerLease
				iters++
			}
			avg := func(v float64) float64 { return v / float64(iters) }
			b.ReportMetric(0, "ns/op") // one iteration is two whole fills: not a figure
			b.ReportMetric(avg(keyed.perLease), "B/key")
			b.ReportMetric(avg(plain.perLease), "B/lease-plain")
			b.ReportMetric(avg(keyed.perLease-plain.perLease), "B/key-overhead")
			b.ReportMetric(avg(keyed.allocsPerLease), "allocs/key")
			b.ReportMetric(avg(plain.allocsPerLease), "allocs/lease-plain")
			b.ReportMetric(avg(keyed.leftPerLease), "B/key-idle")
			b.ReportMetric(avg(plain.leftPerLease), "B/lease-plain-idle")
			b.ReportMetric(avg(keyed.nsPerLease), "ns/key")
			b.ReportMetric(avg(plain.nsPerLease), "ns/lease-plain")
			// What a key's overhead is made of: its limitState, of which
			// the priority lanes of its (empty) queue.
			b.ReportMetric(float64(unsafe.Sizeof(limitState{})), "B/limitState")
			b.ReportMetric(float64(unsafe.Sizeof(waitQueue{})), "B/waitQueue")
		})
	}
}
