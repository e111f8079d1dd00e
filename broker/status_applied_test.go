package broker

import (
	"context"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestLeaderStatusAppliedFollowsItsAppends: §14.1: a broker's status key
// carries "applied", the last journal sequence read (standby) or written
// (leader); `slotctl status` derives a standby's lag from it. The leader's
// must follow its own appends, not stay at its claim entry.
func TestLeaderStatusAppliedFollowsItsAppends(t *testing.T) {
	url := foServer(t)
	leader := foLeader(t, url)
	c, err := client.New(foConn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	claimed := leader.status().Applied
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.CreateLimit(ctx, name, 1); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := leader.js.Stream(ctx, leader.jr.stream)
	if err != nil {
		t.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	if !foWait(3*time.Second, func() bool { return leader.status().Applied == last }) {
		t.Fatalf("the leader's status says applied %d (its claim was %d); the journal's last sequence, written by it, is %d", leader.status().Applied, claimed, last)
	}
}
