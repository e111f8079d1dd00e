package integration

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRateAdmissionsReserveAhead: a rate limit's record stores its decay
// state a quarter of the limit ahead, so most admissions write nothing; a
// crashed broker restarts with at most that reserve more slots taken (it
// never admits more than the limit), and a stopped one with exactly the
// slots taken. A configuration change is written at once.
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
			watch := ev.conn()
			var writes atomic.Int64
			if _, err := watch.Subscribe("$KV."+messages.DefaultBucket+".limit.r", func(*nats.Msg) { writes.Add(1) }); err != nil {
				t.Fatal(err)
			}
			if err := watch.Flush(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < taken; i++ {
				if err := c.TryRateLimit(ctx, "r", 1); err != nil {
					t.Fatalf("admission %d: %v", i+1, err)
				}
			}
			// The broker sends a write before the reply it covers: a round
			// trip of watch's connection delivers every write to it.
			if err := watch.Flush(); err != nil {
				t.Fatal(err)
			}
			if w := writes.Load(); w < 1 || w > taken/reserve+1 {
				t.Fatalf("%d writes of the limit record for %d admissions, want 1 to %d", w, taken, taken/reserve+1)
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
			rsCrashBroker(t, ev)
			info := rsGet(t, ev.client(), "r")
			if info.Limit.Limit != more {
				t.Fatalf("limit after a crash = %d, want the updated %d", info.Limit.Limit, more)
			}
		})
	}
}
