package integration

import (
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

func TestCoreProbeOrphan(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 1)
	if _, err := c.Acquire(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		st := time.Now()
		_, err := c.Acquire(ctx, "db", 1, client.WithTimeout(time.Duration(i%40)*50*time.Microsecond))
		if d := time.Since(st); d > 100*time.Millisecond {
			t.Logf("%d: %v %v", i, d, err)
		}
	}
	eventually(t, 10*time.Second, "no orphan waiters", func() bool {
		info := coreInfo(t, c, "db")
		if len(info.Waiters) != 0 {
			t.Logf("waiters %d", len(info.Waiters))
		}
		return len(info.Waiters) == 0
	})
}
