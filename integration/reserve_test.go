package integration

import (
	"errors"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestRateAdmissionsReserveAhead: a rate limit's journaled record stores
// its decay state a quarter of the limit ahead, so that an admission the
// last record covers needs no journal append (one append per quarter of the
// limit, not one per admission: appends are the broker's cost per request);
// a crashed broker restarts with at most that reserve more slots taken (it
// never admits more than the limit), and a stopped one with exactly the
// slots taken. A configuration change is stored before its answer.
func TestRateAdmissionsReserveAhead(t *testing.T) {
	const limit, taken = 100, 60
	const reserve = limit / 4
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
			created := journalOps(t, nc, "limit.r")
			for i := 0; i < taken; i++ {
				if err := c.TryRateLimit(ctx, "r", 1); err != nil {
					t.Fatalf("admission %d: %v", i+1, err)
				}
			}
			// An admission is answered once a stored record covers it: the
			// journal holds every record the answers needed.
			if w := journalOps(t, nc, "limit.r") - created; w < 1 || w > taken/reserve+1 {
				t.Fatalf("%d journaled records of the limit for %d admissions, want 1 to %d", w, taken, taken/reserve+1)
			}

			mode.restart(t, ev)
			c = ev.client()
			admitted := 0
			for {
				err := c.TryRateLimit(ctx, "r", 1)
				if errors.Is(err, client.ErrNoSlots) {
					break
				}
				if err != nil {
					t.Fatalf("admission after restart: %v", err)
				}
				admitted++
				if admitted > limit {
					t.Fatal("no end of admissions after the restart")
				}
			}
			want := limit - taken
			crashed := mode.name == "broker-crash" || mode.name == "server-crash"
			switch {
			case admitted > want:
				t.Fatalf("%d admitted after the restart, more than the %d left: the limit was exceeded", admitted, want)
			case crashed && admitted < want-reserve:
				t.Fatalf("%d admitted after the crash, want at least %d (%d left less the reserve of %d)", admitted, want-reserve, want, reserve)
			case !crashed && admitted != want:
				t.Fatalf("%d admitted after a clean stop, want exactly the %d left", admitted, want)
			}

			// A configuration change is stored before its reply, reserve or not.
			more := 2 * limit
			if _, err := c.UpdateLimit(ctx, "r", client.LimitUpdate{Limit: &more}); err != nil {
				t.Fatal(err)
			}
			if got, _ := recordField[int](t, storedRecords(t, ev.conn()), "limit.r", "limit"); got != more {
				t.Fatalf("stored limit after the update was answered = %d, want %d", got, more)
			}
			rsCrashBroker(t, ev)
			info := rsGet(t, ev.client(), "r")
			if info.Limit.Limit != more {
				t.Fatalf("limit after a crash = %d, want the updated %d", info.Limit.Limit, more)
			}
		})
	}
}
