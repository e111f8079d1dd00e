package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// rateDrain takes admissions of one slot of name until the broker
// refuses, and returns how many it admitted (at most max+1).
func rateDrain(t *testing.T, ev *env, name string, max int) int {
	t.Helper()
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	// The restarted broker may still be coming up.
	rsGet(t, c, name)
	n := 0
	for n <= max {
		err := c.TryRateLimit(ctx, name, 1)
		if errors.Is(err, client.ErrNoSlots) {
			break
		}
		if err != nil {
			t.Fatalf("admission after restart: %v", err)
		}
		n++
	}
	return n
}

// rateTry sends one rate try of one slot on name (with waitID when given)
// with no client retry, in the background: its answer arrives on the
// returned channel.
func rateTry(ev *env, nc *nats.Conn, name, waitID string) <-chan asyncReply {
	body := `{"occupy":1,"rate":true,"try":true}`
	if waitID != "" {
		body = fmt.Sprintf(`{"occupy":1,"rate":true,"try":true,"wait_id":%q}`, waitID)
	}
	return requestAsync(nc, ev.e.Broker.Subjects().Verb(messages.VerbAcquire, name), []byte(body), 60*time.Second)
}

// wantAdmitted waits for a rate try's answer and fails t unless it admitted.
func wantAdmitted(t *testing.T, ch <-chan asyncReply, what string) {
	t.Helper()
	var r asyncReply
	select {
	case r = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not answered 30 s after the journal outage ended", what)
	}
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	var ar messages.AcquireReply
	if err := json.Unmarshal(r.msg.Data, &ar); err != nil {
		t.Fatalf("%s: %s: %v", what, r.msg.Data, err)
	}
	if ar.Error != nil || ar.Status != messages.StatusGranted {
		t.Fatalf("%s: %s, want granted", what, r.msg.Data)
	}
}

// activeSlots polls the limit until the broker shows n slots taken (in
// memory: a change is visible to inspection before it is stored).
func activeSlots(t *testing.T, c *client.Client, name string, n int) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%d slots of %s taken", n, name), func() bool {
		return rsGet(t, c, name).ActiveSlots == n
	})
}

// TestRateAdmissionDuringJournalOutageCountedOnce: a rate admission is
// answered only once a stored record covers it, and a retry of it (same
// wait id, as a client re-sends a request that timed out) is answered as
// the same admission, not admitted again, and not answered before the
// record is stored either. (Under the previous store the first request was
// answered unavailable and its retry granted with no write at all, so a
// restart exceeded the limit.) During a journal outage neither is
// answered; once it ends both are; after a restart (four ways) admissions
// before and after stay within the limit.
func TestRateAdmissionDuringJournalOutageCountedOnce(t *testing.T) {
	const limit = 4
	for _, mode := range rsModes {
		t.Run(mode.name, func(t *testing.T) {
			ev := newEnv(t)
			c := ev.client()
			ctx := ctxT(t, 60*time.Second)
			// A slot decays every 100 s: nothing decays during the test.
			if _, err := c.CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.01)); err != nil {
				t.Fatal(err)
			}
			nc := ev.conn()
			begin, end := envJournalOutage(t, ev)
			begin()
			first := rateTry(ev, nc, "r", "once")
			activeSlots(t, c, "r", 1)
			retry := rateTry(ev, nc, "r", "once")
			// The outage goes on a moment with both requests at the broker.
			time.Sleep(300 * time.Millisecond)
			notYet(t, first, "the admission")
			notYet(t, retry, "its retry")
			end()
			wantAdmitted(t, first, "the admission")
			wantAdmitted(t, retry, "its retry")
			if n := rsGet(t, c, "r").ActiveSlots; n != 1 {
				t.Fatalf("%d slots taken after an admission and its retry, want 1", n)
			}

			mode.restart(t, ev)
			if after := rateDrain(t, ev, "r", 2*limit); 1+after > limit {
				t.Fatalf("1 admitted during a journal outage + %d after the restart = %d, more than the limit of %d",
					after, 1+after, limit)
			}
		})
	}
}

// TestRateCleanStopAfterJournalOutageIsExact: a clean stop journals the
// exact decay state of every rate limit, so a clean restart loses no slots
// to the reserve (PROTOCOL.md §12), also after a journal outage held up a
// change of the limit (under the previous store a failed write made Stop
// skip the limit). An update during the outage is not answered; once the
// outage ends it is, and a clean restart then admits exactly the slots
// left.
func TestRateCleanStopAfterJournalOutageIsExact(t *testing.T) {
	const limit, taken = 100, 10
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < taken; i++ {
		if err := c.TryRateLimit(ctx, "r", 1); err != nil {
			t.Fatal(err)
		}
	}
	before := rsGet(t, c, "r").Limit.UpdatedAt
	begin, end := envJournalOutage(t, ev)
	begin()
	// An update that changes nothing but its time.
	update := requestAsync(ev.conn(), ev.e.Broker.Subjects().Verb(messages.VerbUpdate, "r"),
		[]byte(fmt.Sprintf(`{"limit":%d}`, limit)), 60*time.Second)
	eventually(t, 10*time.Second, "the update applied (in memory)", func() bool {
		return rsGet(t, c, "r").Limit.UpdatedAt.After(before)
	})
	// The outage goes on a moment with the update at the broker.
	time.Sleep(300 * time.Millisecond)
	notYet(t, update, "the update")
	end()
	select {
	case r := <-update:
		var lr messages.LimitReply
		if r.err != nil || json.Unmarshal(r.msg.Data, &lr) != nil || lr.Error != nil {
			t.Fatalf("the update after the outage: %v %s", r.err, r.msg.Data)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the update was not answered 30 s after the journal outage ended")
	}

	rsRestartBroker(t, ev)
	if got, want := rateDrain(t, ev, "r", 2*limit), limit-taken; got != want {
		t.Fatalf("%d admitted after a clean stop, want exactly the %d left", got, want)
	}
}

// TestRateRecreatedLimitNotCoveredByOldRecord: a limit deleted and created
// again under the same name is another limit: the reserved record of the
// old one (26 slots stored for 1 taken) does not cover an admission on the
// new one, which needs a journal append of its own. During a journal
// outage it is not answered; once the outage ends it is, the journal has a
// record of the new limit for it, and after a crash the restarted broker
// counts it.
func TestRateRecreatedLimitNotCoveredByOldRecord(t *testing.T) {
	const limit = 100
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "r", 1); err != nil { // stored: 26 slots
		t.Fatal(err)
	}
	if _, err := c.DeleteLimit(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	records := journalOps(t, nc, "limit.r")
	begin, end := envJournalOutage(t, ev)
	begin()
	try := rateTry(ev, nc, "r", "")
	activeSlots(t, c, "r", 1)
	// The outage goes on a moment with the admission at the broker.
	time.Sleep(300 * time.Millisecond)
	notYet(t, try, "the admission on the recreated limit")
	end()
	wantAdmitted(t, try, "the admission on the recreated limit")
	if n := journalOps(t, nc, "limit.r") - records; n != 1 {
		t.Fatalf("%d records of the recreated limit journaled for its first admission, want 1", n)
	}

	rsCrashBroker(t, ev)
	if got := rateDrain(t, ev, "r", 2*limit); got > limit-1 || got < limit-1-limit/4 {
		t.Fatalf("%d admitted after the crash, want %d to %d (the %d left, less at most the reserve of %d)",
			got, limit-1-limit/4, limit-1, limit-1, limit/4)
	}
}

// TestRateAdmissionsUnansweredUntilJournalStored: an admission that
// outruns the stored record waits for the append of a new one, and so do
// the admissions after it that the new record covers: none is answered
// before that record is stored, or a crash could forget admissions already
// answered. During a journal outage none of three admissions is answered;
// once it ends all are, and after a crash the restarted broker counts them.
func TestRateAdmissionsUnansweredUntilJournalStored(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	begin, end := envJournalOutage(t, ev)
	begin()
	var tries []<-chan asyncReply
	for i := 1; i <= 3; i++ {
		tries = append(tries, rateTry(ev, nc, "r", ""))
		activeSlots(t, c, "r", i)
	}
	// The outage goes on a moment with the admissions at the broker.
	time.Sleep(300 * time.Millisecond)
	for i, ch := range tries {
		notYet(t, ch, fmt.Sprintf("admission %d", i+1))
	}
	end()
	for i, ch := range tries {
		wantAdmitted(t, ch, fmt.Sprintf("admission %d", i+1))
	}
	wantAdmitted(t, rateTry(ev, nc, "r", ""), "the admission after the outage")
	rsCrashBroker(t, ev)
	// 4 taken, stored with at most the reserve of 25 more: 71 to 96 left.
	if got := rateDrain(t, ev, "r", 200); got > 96 || got < 96-25 {
		t.Fatalf("%d admitted after the crash, want 71 to 96", got)
	}
}

// TestRateUpdatesRacingAdmissionsSurviveCrash: updates race with
// concurrent admissions (each update journals the limit's record, and so do
// admissions that outrun the reserve); after a crash the configuration is
// the last one answered and the limit is neither exceeded nor short of more
// than the reserve.
func TestRateUpdatesRacingAdmissionsSurviveCrash(t *testing.T) {
	const limit = 300
	ev := newEnv(t)
	admin := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := admin.CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	var admitted atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := ev.client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := c.TryRateLimit(ctx, "r", 1)
				switch {
				case err == nil:
					admitted.Add(1)
				case errors.Is(err, client.ErrNoSlots):
				default:
					t.Errorf("admission: %v", err)
					return
				}
			}
		}()
	}
	var last *client.LimitInfo
	for i := 0; admitted.Load() < limit/2; i++ {
		same := limit
		info, err := admin.UpdateLimit(ctx, "r", client.LimitUpdate{Limit: &same})
		if err != nil {
			t.Fatal(err)
		}
		last = info
	}
	close(stop)
	wg.Wait()
	rsCrashBroker(t, ev)
	info := rsGet(t, ev.client(), "r")
	if !info.Limit.UpdatedAt.Equal(last.Limit.UpdatedAt) {
		t.Fatalf("updated_at after a crash = %v, want the last answered %v", info.Limit.UpdatedAt, last.Limit.UpdatedAt)
	}
	before := int(admitted.Load())
	if after := rateDrain(t, ev, "r", 2*limit); before+after > limit || before+after < limit-limit/4-1 {
		t.Fatalf("%d admitted before the crash + %d after = %d, want %d to %d", before, after, before+after, limit-limit/4-1, limit)
	}
}

// TestRateCleanRestartDuringAdmissionsIsExact: a clean restart while
// admissions (and their journal appends) are in flight loses nothing and
// admits nothing twice, because Stop journals the exact decay state after
// the last admission: admissions before + after = the limit.
func TestRateCleanRestartDuringAdmissionsIsExact(t *testing.T) {
	const limit = 400
	ev := newEnv(t)
	ctx := ctxT(t, 60*time.Second)
	if _, err := ev.client().CreateLimit(ctx, "r", limit, client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		c := ev.client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for refused.Load() == 0 {
				err := c.TryRateLimit(ctx, "r", 1)
				switch {
				case err == nil:
					admitted.Add(1)
				case errors.Is(err, client.ErrNoSlots):
					refused.Add(1)
				default:
					t.Errorf("admission: %v", err)
					return
				}
			}
		}()
	}
	eventually(t, 20*time.Second, "a third admitted", func() bool { return admitted.Load() >= limit/3 })
	rsRestartBroker(t, ev)
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("%d admitted across a clean restart, want exactly %d", got, limit)
	}
}

// TestRateDeclinedGrantSlotsComeBackAfterCrash: a rate grant that its
// waiter declines gives its slots back, and the record journaled for it
// must give them back too: a stored record that still holds them would
// count as covering the lower state, and after a crash the declined slots
// would stay taken on top of the reserve, beyond the documented "at most a
// quarter of the limit".
func TestRateDeclinedGrantSlotsComeBackAfterCrash(t *testing.T) {
	const limit = 8
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", limit/2, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < limit/2; i++ { // full: 4 of 4
		if err := c.TryRateLimit(ctx, "r", 1); err != nil {
			t.Fatal(err)
		}
	}
	nc := ev.conn()
	sub, err := nc.Subscribe("_INBOX.declined.w", func(m *nats.Msg) { _ = m.Respond([]byte(`{"accept":false}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	resp, err := nc.Request(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "r"),
		[]byte(`{"occupy":4,"rate":true,"wait_id":"declinedW","notify":"_INBOX.declined.w"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ar messages.AcquireReply
	if err := json.Unmarshal(resp.Data, &ar); err != nil || ar.Status != messages.StatusQueued {
		t.Fatalf("waiter: %s %v", resp.Data, err)
	}
	// Raising the limit grants the waiter (8 of 8 taken, stored); it declines.
	more := limit
	if _, err := c.UpdateLimit(ctx, "r", client.LimitUpdate{Limit: &more}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the declined grant given back", func() bool {
		info, err := c.GetLimit(ctx, "r")
		return err == nil && len(info.Waiters) == 0 && info.ActiveSlots == limit/2
	})
	rsCrashBroker(t, ev)
	// 4 of 8 free before the crash; the reserve may take at most 8/4 = 2.
	if got := rateDrain(t, ev, "r", 2*limit); got < limit/2-limit/4 {
		t.Fatalf("%d admitted after the crash, want at least %d (%d free less the reserve of %d)", got, limit/2-limit/4, limit/2, limit/4)
	}
}
