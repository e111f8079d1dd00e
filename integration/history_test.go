package integration

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// history records, for the failover tests, every acquisition as the clients
// saw it, and checks three rules on it afterwards:
//
//   - checkOverAdmission: at no instant do the non-lost holds of a limit
//     occupy more than its slots;
//   - checkUnique: no fencing token and no lease id is handed out twice;
//   - checkFIFO: of two queued single-slot acquisitions on one limit, the one
//     queued before the other was even sent is granted first (lower token).
//
// Why interval overlap and not a linearizability checker such as porcupine:
// the property that matters, "never more holders than slots", is a
// statement about intervals, and client-observed intervals bound the
// broker's real ones from inside. A hold's `held` is taken when Acquire has
// returned, after the broker granted it; its `released` is taken before
// Release is called, before the broker frees the slots; and a lease whose
// context ended before release is `lost` and left out (the client's lease
// deadline is never later than the broker's, so a lease that has not ended
// was still the broker's at `released`). Each client interval thus lies
// inside the broker's interval for that lease, so two client intervals that
// overlap prove two broker grants that overlapped: every over-admission
// reported is real (no false positives), whatever the timing jitter. Missing
// one that happened in a gap the clients did not see is possible, which more
// holders and more cycles make unlikely. A search over all linearizations
// would cost exponential time for nothing more here, and the order of grants
// needs no search either: the broker numbers them, tokens increase in grant
// order, which checkFIFO and checkUnique use directly.
//
// Times are time.Now() in this process (monotonic), so record from the test
// process. The zero value is ready to use and safe for concurrent use.
type history struct {
	mu   sync.Mutex
	recs []*acquisition
	// fifoExempt, when set, leaves out of the FIFO rule the acquisitions
	// it returns true for: those documented to lose their place (a waiter
	// whose connection was down when its grant was pushed is queued again
	// at the back when it reconnects, PROTOCOL.md §8).
	fifoExempt func(acquisition) bool
}

// acquisition is one Acquire on one limit, as a client saw it.
type acquisition struct {
	limit   string // the limit's name
	size    int    // the limit's slots
	occupy  int    // slots asked for
	client  string // which client (for reports)
	token   uint64 // the lease's fencing token, once held
	leaseID string // the lease's id, once held
	sent    time.Time
	queued  time.Time // first WithQueued callback; zero if granted at once
	held    time.Time // Acquire returned the lease; zero if it never did
	// released is taken just before Release is called; zero if the lease is
	// still held (its interval then runs to the end of time) or was lost.
	released time.Time
	// lost: the lease ended (lease.Done) before Release was called: lost to
	// its deadline, a deletion, the broker. Its hold is left out of the
	// over-admission check: the broker may have reclaimed it long before the
	// client noticed.
	lost bool
}

// histOp records one acquisition as it happens. Its methods are safe for
// concurrent use (WithQueued's callback runs on another goroutine).
type histOp struct {
	h *history
	a *acquisition
}

// begin records an acquisition about to be sent (sent = now):
//
//	op := h.begin("db", 3, 1, "c7")
//	lease, err := c.Acquire(ctx, "db", 1, client.WithQueued(op.onQueued))
//	if err != nil { ... }           // never held: ignored by the checks
//	op.granted(lease.Token(), lease.ID())
//	...
//	select {
//	case <-lease.Done():
//		op.lose()
//	default:
//		op.releasing()
//	}
//	_ = lease.Release(ctx)
func (h *history) begin(limit string, size, occupy int, client string) *histOp {
	a := &acquisition{limit: limit, size: size, occupy: occupy, client: client, sent: time.Now()}
	h.mu.Lock()
	h.recs = append(h.recs, a)
	h.mu.Unlock()
	return &histOp{h: h, a: a}
}

// onQueued notes the first time the broker reported the request queued. Its
// signature fits client.WithQueued.
func (o *histOp) onQueued(client.Queued) {
	now := time.Now()
	o.h.mu.Lock()
	defer o.h.mu.Unlock()
	if o.a.queued.IsZero() {
		o.a.queued = now
	}
}

// granted notes that Acquire returned the lease (held = now).
func (o *histOp) granted(token uint64, leaseID string) {
	now := time.Now()
	o.h.mu.Lock()
	defer o.h.mu.Unlock()
	o.a.held, o.a.token, o.a.leaseID = now, token, leaseID
}

// releasing notes that Release is about to be called (released = now).
func (o *histOp) releasing() {
	now := time.Now()
	o.h.mu.Lock()
	defer o.h.mu.Unlock()
	o.a.released = now
}

// lose notes that the lease ended before it was released.
func (o *histOp) lose() {
	o.h.mu.Lock()
	defer o.h.mu.Unlock()
	o.a.lost = true
}

// add records a complete acquisition (a synthetic history, or one recorded
// elsewhere).
func (h *history) add(a acquisition) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, &a)
}

// records is a copy of every acquisition recorded so far.
func (h *history) records() []acquisition {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]acquisition, len(h.recs))
	for i, a := range h.recs {
		out[i] = *a
	}
	return out
}

// histByLimit groups the records by limit name, names sorted.
func histByLimit(recs []acquisition) ([]string, map[string][]acquisition) {
	m := make(map[string][]acquisition)
	for _, a := range recs {
		m[a.limit] = append(m[a.limit], a)
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, m
}

// histOrigin is the earliest time in recs, for readable offsets in reports.
func histOrigin(recs []acquisition) time.Time {
	var t0 time.Time
	for _, a := range recs {
		if !a.sent.IsZero() && (t0.IsZero() || a.sent.Before(t0)) {
			t0 = a.sent
		}
	}
	return t0
}

func (a acquisition) String() string {
	return fmt.Sprintf("%s(lease %s, token %d, occupy %d)", a.client, a.leaseID, a.token, a.occupy)
}

// histMaxReports bounds the problems each rule reports per limit.
const histMaxReports = 10

// checkOverAdmission sweeps, per limit, the [held, released] intervals of
// the holds that were not lost (an unreleased one runs to the end of time)
// and reports each instant at which their summed occupy exceeds the limit's
// slots. An interval ending at the same instant as another starts counts as
// over before it. The slots of a limit are the largest size recorded for it
// (a limit raised during the test must not make a false report).
func (h *history) checkOverAdmission() []string {
	recs := h.records()
	t0 := histOrigin(recs)
	names, groups := histByLimit(recs)
	var problems []string
	type event struct {
		at    time.Time
		start bool
		a     acquisition
		seq   int
	}
	for _, name := range names {
		size := 0
		var evs []event
		for i, a := range groups[name] {
			size = max(size, a.size)
			if a.held.IsZero() || a.lost {
				continue
			}
			if !a.released.IsZero() && a.released.Before(a.held) {
				problems = append(problems, fmt.Sprintf("limit %q: %v released at +%v before it was held at +%v (a recording bug)",
					name, a, a.released.Sub(t0), a.held.Sub(t0)))
				continue
			}
			evs = append(evs, event{at: a.held, start: true, a: a, seq: i})
			if !a.released.IsZero() {
				evs = append(evs, event{at: a.released, start: false, a: a, seq: i})
			}
		}
		sort.SliceStable(evs, func(i, j int) bool {
			if !evs[i].at.Equal(evs[j].at) {
				return evs[i].at.Before(evs[j].at)
			}
			return !evs[i].start && evs[j].start // ends first
		})
		active := make(map[int]acquisition)
		used, reported, more := 0, 0, 0
		for _, ev := range evs {
			if !ev.start {
				delete(active, ev.seq)
				used -= ev.a.occupy
				continue
			}
			active[ev.seq] = ev.a
			used += ev.a.occupy
			if used <= size {
				continue
			}
			if reported == histMaxReports {
				more++
				continue
			}
			reported++
			holders := make([]string, 0, len(active))
			for _, seq := range slices.Sorted(maps.Keys(active)) {
				holders = append(holders, active[seq].String())
			}
			problems = append(problems, fmt.Sprintf("limit %q over-admitted at +%v: %d slots held of %d, by %s",
				name, ev.at.Sub(t0), used, size, strings.Join(holders, ", ")))
		}
		if more > 0 {
			problems = append(problems, fmt.Sprintf("limit %q over-admitted %d more times", name, more))
		}
	}
	return problems
}

// checkUnique reports every fencing token and every lease id held by more
// than one acquisition, across all limits. Unlimited leases (no id, token 0:
// a missing limit without WithStrict) are not leases and are skipped.
func (h *history) checkUnique() []string {
	recs := h.records()
	tokens := make(map[uint64][]acquisition)
	ids := make(map[string][]acquisition)
	for _, a := range recs {
		if a.held.IsZero() || (a.leaseID == "" && a.token == 0) {
			continue
		}
		tokens[a.token] = append(tokens[a.token], a)
		ids[a.leaseID] = append(ids[a.leaseID], a)
	}
	var problems []string
	for _, tok := range slices.Sorted(maps.Keys(tokens)) {
		if as := tokens[tok]; len(as) > 1 {
			problems = append(problems, fmt.Sprintf("token %d handed out %d times: %s", tok, len(as), histDescribe(as)))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if as := ids[id]; len(as) > 1 {
			problems = append(problems, fmt.Sprintf("lease id %q handed out %d times: %s", id, len(as), histDescribe(as)))
		}
	}
	return problems
}

func histDescribe(as []acquisition) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = fmt.Sprintf("%s on %q", a, a.limit)
	}
	return strings.Join(parts, "; ")
}

// checkFIFO reports, per limit, pairs of granted acquisitions of one slot
// that were both queued, where A was queued (as its client saw) before B was
// even sent and yet B got the lower token. The broker queued A before B
// arrived, so A was ahead of B in the queue and, the queue being FIFO and
// tokens increasing in grant order, must have the lower token. Pairs that
// overlap (B sent before A was seen queued) may be granted in either order.
// For each B it reports the A with the highest token.
func (h *history) checkFIFO() []string {
	recs := h.records()
	t0 := histOrigin(recs)
	names, groups := histByLimit(recs)
	var problems []string
	for _, name := range names {
		var eligible []acquisition
		for _, a := range groups[name] {
			if a.occupy == 1 && !a.queued.IsZero() && !a.held.IsZero() && (h.fifoExempt == nil || !h.fifoExempt(a)) {
				eligible = append(eligible, a)
			}
		}
		byQueued := slices.Clone(eligible)
		sort.SliceStable(byQueued, func(i, j int) bool { return byQueued[i].queued.Before(byQueued[j].queued) })
		bySent := slices.Clone(eligible)
		sort.SliceStable(bySent, func(i, j int) bool { return bySent[i].sent.Before(bySent[j].sent) })

		var worst *acquisition // among those queued before the current B was sent, the highest token
		next, reported, more := 0, 0, 0
		for _, b := range bySent {
			for next < len(byQueued) && byQueued[next].queued.Before(b.sent) {
				if worst == nil || byQueued[next].token > worst.token {
					worst = &byQueued[next]
				}
				next++
			}
			if worst == nil || worst.token <= b.token {
				continue
			}
			if reported == histMaxReports {
				more++
				continue
			}
			reported++
			problems = append(problems, fmt.Sprintf("limit %q not FIFO: %v was queued at +%v, before %v was sent at +%v, yet got the higher token",
				name, *worst, worst.queued.Sub(t0), b, b.sent.Sub(t0)))
		}
		if more > 0 {
			problems = append(problems, fmt.Sprintf("limit %q: %d more FIFO violations", name, more))
		}
	}
	return problems
}

// check runs every rule and reports each problem with t.Error, then logs
// the summary.
func (h *history) check(t testing.TB) {
	t.Helper()
	for _, rule := range []struct {
		name  string
		check func() []string
	}{
		{"over-admission", h.checkOverAdmission},
		{"unique tokens and lease ids", h.checkUnique},
		{"FIFO", h.checkFIFO},
	} {
		for _, p := range rule.check() {
			t.Errorf("history, %s: %s", rule.name, p)
		}
	}
	t.Logf("history: %s", h.summary())
}

// summary counts the acquisitions: how many, on how many limits, granted,
// queued first, released, lost, still held, never granted.
func (h *history) summary() string {
	recs := h.records()
	names, _ := histByLimit(recs)
	var granted, queued, released, lost, holding, never int
	for _, a := range recs {
		switch {
		case a.held.IsZero():
			never++
		case a.lost:
			lost++
		case a.released.IsZero():
			holding++
		default:
			released++
		}
		if !a.held.IsZero() {
			granted++
			if !a.queued.IsZero() {
				queued++
			}
		}
	}
	return fmt.Sprintf("%d acquisitions on %d limits: %d granted (%d of them queued first), %d released, %d lost, %d still held, %d never granted",
		len(recs), len(names), granted, queued, released, lost, holding, never)
}

// --- the checker's own tests, on synthetic histories ---

// histT0 and histAt make a synthetic clock: histAt(ms) is ms milliseconds after histT0.
var histT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func histAt(ms int) time.Time { return histT0.Add(time.Duration(ms) * time.Millisecond) }

// histHold is a held and released acquisition of occupy slots on limit db (size slots).
func histHold(client string, size, occupy int, token uint64, from, to int) acquisition {
	a := acquisition{limit: "db", size: size, occupy: occupy, client: client, token: token,
		leaseID: fmt.Sprintf("L%d", token), sent: histAt(from - 1), held: histAt(from)}
	if to >= 0 {
		a.released = histAt(to)
	}
	return a
}

func histOf(as ...acquisition) *history {
	h := &history{}
	for _, a := range as {
		h.add(a)
	}
	return h
}

func wantProblems(t *testing.T, rule string, problems []string, want int) {
	t.Helper()
	if len(problems) != want {
		t.Errorf("%s: %d problems, want %d:\n  %s", rule, len(problems), want, strings.Join(problems, "\n  "))
	}
}

func TestHistoryOverAdmissionRule(t *testing.T) {
	good := []acquisition{
		histHold("a", 2, 1, 1, 10, 20),
		histHold("b", 2, 1, 2, 10, 30),
		histHold("c", 2, 1, 3, 20, 40), // starts the instant a ends: not an overlap
		histHold("d", 2, 1, 4, 30, 40),
		histHold("e", 2, 2, 5, 40, -1), // two slots, still held at the end
	}
	lost := histHold("lost", 2, 1, 6, 15, 45) // overlaps everything, but was lost: left out
	lost.lost = true
	never := acquisition{limit: "db", size: 2, occupy: 2, client: "never", sent: histAt(1)} // timed out
	other := histHold("other", 2, 2, 7, 10, 50)                                             // another limit
	other.limit = "other"
	wantProblems(t, "good history", histOf(append(good, lost, never, other)...).checkOverAdmission(), 0)

	// A third holder of one slot while two are held.
	wantProblems(t, "overlap by one instant",
		histOf(append(good, histHold("x", 2, 1, 8, 19, 20))...).checkOverAdmission(), 1)
	// A weighted hold: two slots while one is held.
	wantProblems(t, "weighted overlap",
		histOf(histHold("a", 2, 1, 1, 10, 20), histHold("w", 2, 2, 2, 15, 25)).checkOverAdmission(), 1)
	// An unreleased hold runs to the end of time: a later hold of both slots overlaps it.
	wantProblems(t, "unreleased hold",
		histOf(histHold("a", 2, 1, 1, 10, -1), histHold("w", 2, 2, 2, 100, 110)).checkOverAdmission(), 1)
	// Two limits are checked separately: each over-admitted once.
	x, y := histHold("x", 1, 1, 11, 10, 20), histHold("y", 1, 1, 12, 15, 25)
	x.limit, y.limit = "other", "other"
	wantProblems(t, "two limits",
		histOf(histHold("a", 1, 1, 1, 10, 20), histHold("b", 1, 1, 2, 15, 25), x, y).checkOverAdmission(), 2)
	// A release recorded before the hold is a recording bug, reported.
	wantProblems(t, "release before hold",
		histOf(histHold("a", 1, 1, 1, 10, 5)).checkOverAdmission(), 1)
}

func TestHistoryUniqueRule(t *testing.T) {
	a, b, c := histHold("a", 3, 1, 1, 10, 20), histHold("b", 3, 1, 2, 10, 20), histHold("c", 3, 1, 3, 10, 20)
	c.limit = "other"
	unlimited1 := acquisition{limit: "gone", size: 1, occupy: 1, client: "u1", sent: histAt(1), held: histAt(2), released: histAt(3)}
	unlimited2 := unlimited1
	unlimited2.client = "u2"
	never1 := acquisition{limit: "db", size: 3, occupy: 1, client: "n1", sent: histAt(1)}
	never2 := never1
	wantProblems(t, "good history", histOf(a, b, c, unlimited1, unlimited2, never1, never2).checkUnique(), 0)

	dupToken := b
	dupToken.token, dupToken.leaseID = a.token, "other-id"
	wantProblems(t, "duplicate token", histOf(a, dupToken, c).checkUnique(), 1)

	dupID := c // on another limit
	dupID.token, dupID.leaseID = 99, a.leaseID
	wantProblems(t, "duplicate lease id across limits", histOf(a, b, dupID).checkUnique(), 1)

	wantProblems(t, "both duplicated", histOf(a, b, a).checkUnique(), 2)
}

func TestHistoryFIFORule(t *testing.T) {
	queuedHold := func(client string, token uint64, sent, queued int) acquisition {
		a := histHold(client, 1, 1, token, queued+50, queued+60)
		a.sent, a.queued = histAt(sent), histAt(queued)
		return a
	}
	good := []acquisition{
		queuedHold("a", 5, 0, 10),
		queuedHold("b", 7, 20, 30), // sent after a was queued: later token
		queuedHold("c", 6, 12, 14), // sent after a was queued too
		// d and e overlap (each sent before the other was seen queued):
		// either order is fine, here the later-sent one has the lower token.
		queuedHold("d", 9, 40, 45),
		queuedHold("e", 8, 41, 46),
	}
	// Not in the rule: granted at once, two slots, never granted, other limit.
	atOnce := histHold("now", 1, 1, 1, 100, 110)
	atOnce.sent = histAt(99)
	weighted := queuedHold("w", 2, 1, 2)
	weighted.occupy = 2
	never := acquisition{limit: "db", size: 1, occupy: 1, client: "never", sent: histAt(3), queued: histAt(4)}
	other := queuedHold("o", 3, 50, 51)
	other.limit = "other"
	wantProblems(t, "good history", histOf(append(good, atOnce, weighted, never, other)...).checkFIFO(), 0)

	// f was queued before g was sent, yet g got the lower token.
	wantProblems(t, "overtaken",
		histOf(queuedHold("f", 12, 0, 10), queuedHold("g", 11, 11, 12)).checkFIFO(), 1)
	// Two overtaken by one: one report each.
	wantProblems(t, "overtaken twice",
		histOf(append(good, queuedHold("late", 20, 50, 52), queuedHold("x", 18, 60, 61), queuedHold("y", 19, 62, 63))...).checkFIFO(), 2)
	// Equal instants: queued at the very instant the other was sent is not before it.
	wantProblems(t, "same instant",
		histOf(queuedHold("f", 12, 0, 10), queuedHold("g", 11, 10, 12)).checkFIFO(), 0)
}

// histTB collects what check reports instead of failing the test.
type histTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *histTB) Helper() {}
func (r *histTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *histTB) Logf(string, ...any) {}

func TestHistoryCheckReportsEveryRule(t *testing.T) {
	good := histOf(histHold("a", 1, 1, 1, 10, 20), histHold("b", 1, 1, 2, 20, 30))
	rec := &histTB{TB: t}
	good.check(rec)
	if len(rec.errors) != 0 {
		t.Errorf("check on a good history reported %q", rec.errors)
	}

	f, g := histHold("f", 1, 1, 12, 100, 110), histHold("g", 1, 1, 11, 200, 210)
	f.sent, f.queued, g.sent, g.queued = histAt(0), histAt(5), histAt(6), histAt(7)
	bad := histOf(histHold("a", 1, 1, 1, 10, 20), histHold("b", 1, 1, 1, 15, 30), f, g)
	rec = &histTB{TB: t}
	bad.check(rec)
	for _, rule := range []string{"over-admission", "unique", "FIFO"} {
		if !slices.ContainsFunc(rec.errors, func(e string) bool { return strings.Contains(e, rule) }) {
			t.Errorf("check did not report the %s rule; reported %q", rule, rec.errors)
		}
	}
}

// TestHistoryRecordsConcurrently drives histOp from many goroutines (the
// race detector watches) and checks the summary counts.
func TestHistoryRecordsConcurrently(t *testing.T) {
	h := &history{}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := h.begin(fmt.Sprintf("l%d", i%2), 100, 1, fmt.Sprintf("c%d", i))
			if i%4 == 0 {
				var cb sync.WaitGroup
				cb.Go(func() { op.onQueued(client.Queued{Position: 1}) }) // the client calls WithQueued from its own goroutine
				op.onQueued(client.Queued{Position: 2})
				cb.Wait()
			}
			if i%10 == 9 {
				return // never granted
			}
			op.granted(uint64(i+1), fmt.Sprintf("L%d", i))
			switch i % 3 {
			case 0:
				op.lose()
			case 1:
				op.releasing()
			}
		}()
	}
	wg.Wait()
	// (No FIFO check: this synthetic "broker" hands out tokens in no order.)
	for _, rule := range []func() []string{h.checkOverAdmission, h.checkUnique} {
		wantProblems(t, "concurrent history", rule(), 0)
	}
	// i%10==9 never granted: 4. Of the 36 granted: lost i%3==0, released i%3==1, held i%3==2.
	var lost, released, holding int
	for i := range 40 {
		if i%10 == 9 {
			continue
		}
		switch i % 3 {
		case 0:
			lost++
		case 1:
			released++
		default:
			holding++
		}
	}
	want := fmt.Sprintf("40 acquisitions on 2 limits: 36 granted (10 of them queued first), %d released, %d lost, %d still held, 4 never granted",
		released, lost, holding)
	if got := h.summary(); got != want {
		t.Errorf("summary:\n got %s\nwant %s", got, want)
	}
}
