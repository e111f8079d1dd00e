package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// rvDrain takes admissions of one slot of name until the broker refuses,
// and returns how many it admitted (at most max+1).
func rvDrain(t *testing.T, ev *env, name string, max int) int {
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

// rvRawTry sends one rate try for name with no client retry and returns
// the broker's first answer.
func rvRawTry(t *testing.T, ev *env, nc *nats.Conn, name, waitID string) messages.AcquireReply {
	t.Helper()
	body := `{"occupy":1,"rate":true,"try":true}`
	if waitID != "" {
		body = fmt.Sprintf(`{"occupy":1,"rate":true,"try":true,"wait_id":%q}`, waitID)
	}
	resp, err := nc.Request(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, name), []byte(body), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r messages.AcquireReply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		t.Fatalf("%s: %v", resp.Data, err)
	}
	return r
}

func rvOutage(t *testing.T, ev *env) (begin, end func()) {
	t.Helper()
	js, err := jetstream.New(ev.conn())
	if err != nil {
		t.Fatal(err)
	}
	return kvOutage(ctxT(t, 60*time.Second), t, js)
}

// TestReviewReserveRetriedAdmissionUncovered: an admission whose write fails
// is answered unavailable, but the broker remembers its wait id as admitted;
// the client retries the 503 with the same wait id and the retry is answered
// granted with no write at all. The answered admission is covered by no
// stored record: after a crash (and, since storeExact skips a limit whose
// last write failed, after a clean stop too) the limit is exceeded.
func TestReviewReserveRetriedAdmissionUncovered(t *testing.T) {
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
			begin, end := rvOutage(t, ev)
			begin()
			before := 0
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := c.TryRateLimit(tctx, "r", 1); err == nil {
				before++ // answered admitted while the bucket takes no write
			} else {
				t.Logf("admission during the outage: %v", err)
			}
			cancel()
			end()

			mode.restart(t, ev)
			after := rvDrain(t, ev, "r", 2*limit)
			if before+after > limit {
				t.Fatalf("%d admitted during a bucket outage + %d after the restart = %d, more than the limit of %d",
					before, after, before+after, limit)
			}
		})
	}
}

// TestReviewReserveCleanStopAfterFailedWrite: once a write of a limit fails
// (lw.last = nil), Stop's storeExact skips the limit, so a clean restart
// comes back with the reserved tat of the last stored record: it loses up
// to a quarter of the limit, though PROTOCOL.md §12 says a stopped broker
// writes the exact tat ("a clean restart loses nothing").
func TestReviewReserveCleanStopAfterFailedWrite(t *testing.T) {
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
	begin, end := rvOutage(t, ev)
	begin()
	// An update that changes nothing but its time: its write fails.
	same := limit
	if _, err := c.UpdateLimit(ctx, "r", client.LimitUpdate{Limit: &same}); err == nil {
		t.Fatal("update answered while the bucket takes no write")
	}
	end()

	rsRestartBroker(t, ev)
	if got, want := rvDrain(t, ev, "r", 2*limit), limit-taken; got != want {
		t.Fatalf("%d admitted after a clean stop, want exactly the %d left", got, want)
	}
}

// TestReviewReserveRecreatedNotCoveredByOld (guard, expected to pass): a
// limit deleted and created again under the same name is not covered by the
// reserved record of the old one: an admission on it during an outage is
// answered unavailable (first answer, no client retry).
func TestReviewReserveRecreatedNotCoveredByOld(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	if err := c.TryRateLimit(ctx, "r", 1); err != nil { // stored: 26 slots
		t.Fatal(err)
	}
	if _, err := c.DeleteLimit(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "r", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	begin, end := rvOutage(t, ev)
	begin()
	r := rvRawTry(t, ev, ev.conn(), "r", "")
	end()
	if r.Error == nil || r.Error.Code != messages.CodeUnavailable {
		t.Fatalf("admission on the recreated limit during an outage: %+v, want unavailable", r)
	}
}

// TestReviewReserveFailedWriteNotCovering (guard, expected to pass): once
// the write an admission outran fails, later admissions (that the failed
// write would have covered) are not answered until a write is stored.
func TestReviewReserveFailedWriteNotCovering(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateLimit(ctx, "r", 100, client.WithSlotDecay(0.01)); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	begin, end := rvOutage(t, ev)
	begin()
	for i := 0; i < 3; i++ {
		if r := rvRawTry(t, ev, nc, "r", ""); r.Error == nil || r.Error.Code != messages.CodeUnavailable {
			t.Fatalf("admission %d during an outage: %+v, want unavailable", i+1, r)
		}
	}
	end()
	if r := rvRawTry(t, ev, nc, "r", ""); r.Error != nil {
		t.Fatalf("admission after the outage: %+v", r.Error)
	}
	rsCrashBroker(t, ev)
	// 4 taken in memory (3 unanswered + 1), stored with the reserve: 29.
	if got := rvDrain(t, ev, "r", 200); got > 96 || got < 96-25 {
		t.Fatalf("%d admitted after the crash, want 71 to 96", got)
	}
}

// TestReviewReserveUpdateRacingAdmissions (guard, expected to pass):
// updates race with concurrent admissions; after a crash the configuration
// is the last one answered and the limit is not exceeded.
func TestReviewReserveUpdateRacingAdmissions(t *testing.T) {
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
	if after := rvDrain(t, ev, "r", 2*limit); before+after > limit || before+after < limit-limit/4-1 {
		t.Fatalf("%d admitted before the crash + %d after = %d, want %d to %d", before, after, before+after, limit-limit/4-1, limit)
	}
}

// TestReviewReserveStopDuringAdmissions (guard, expected to pass): a clean
// restart while admissions (and their writes) are in flight loses nothing
// and admits nothing twice: admissions before + after = the limit.
func TestReviewReserveStopDuringAdmissions(t *testing.T) {
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

// TestReviewReserveRefusedGrantStaysStored: a rate grant that is declined
// gives its slots back in memory, but the lower tat is now "covered" by the
// stored (higher) record, so nothing is written: after a crash the declined
// slots stay taken on top of the reserve, beyond the documented "at most a
// quarter of the limit" (before this commit the refusal wrote the exact tat).
func TestReviewReserveRefusedGrantStaysStored(t *testing.T) {
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
	sub, err := nc.Subscribe("_INBOX.rv.w", func(m *nats.Msg) { _ = m.Respond([]byte(`{"accept":false}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	resp, err := nc.Request(ev.e.Broker.Subjects().Verb(messages.VerbAcquire, "r"),
		[]byte(`{"occupy":4,"rate":true,"wait_id":"rvW","notify":"_INBOX.rv.w"}`), 5*time.Second)
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
	if got := rvDrain(t, ev, "r", 2*limit); got < limit/2-limit/4 {
		t.Fatalf("%d admitted after the crash, want at least %d (%d free less the reserve of %d)", got, limit/2-limit/4, limit/2, limit/4)
	}
}
