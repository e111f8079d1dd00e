package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The cluster harness's own tests, on real servers: the cluster forms,
// Partition really isolates a node (its routes never get around the
// bridges, even after a Heal), and Kill loses a stream leader the way a
// crash does.

const selftestBucket = "sbselftest"

// selftestKV creates an R3 bucket through node 0 and returns, per node, the
// bucket as seen by a client connected to that node only.
func selftestKV(t *testing.T, c *cluster) []jetstream.KeyValue {
	t.Helper()
	kvs := make([]jetstream.KeyValue, c.Size())
	for i := range c.Size() {
		js, err := jetstream.New(c.Conn(t, i))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := js.CreateKeyValue(ctxT(t, 10*time.Second), jetstream.KeyValueConfig{Bucket: selftestBucket, Replicas: 3}); err != nil {
				t.Fatalf("create R3 bucket: %v", err)
			}
		}
		kv, err := js.KeyValue(ctxT(t, 10*time.Second), selftestBucket)
		if err != nil {
			t.Fatalf("bucket through %s: %v", c.Name(i), err)
		}
		kvs[i] = kv
	}
	return kvs
}

// selftestPut puts through kv with a short timeout.
func selftestPut(kv jetstream.KeyValue, key, value string, within time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return kv.PutString(ctx, key, value)
}

// selftestGet reads key through kv, "" with the error if it cannot.
func selftestGet(kv jetstream.KeyValue, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, err := kv.Get(ctx, key)
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}

const selftestStream = "KV_" + selftestBucket

func TestClusterFormsAndR3BucketAcceptsPutsThroughEveryNode(t *testing.T) {
	begin := time.Now()
	c := startCluster(t, 3)
	t.Logf("cluster formed in %v", time.Since(begin).Round(time.Millisecond))
	if got, want := c.URLs(), fmt.Sprintf("%s,%s,%s", c.URL(0), c.URL(1), c.URL(2)); got != want {
		t.Fatalf("URLs() = %q, want %q", got, want)
	}
	for i := range 3 {
		if n := c.Server(i).NumRoutes(); n == 0 {
			t.Errorf("%s has no routes", c.Name(i))
		}
	}
	t.Logf("meta leader %s", c.Name(c.MetaLeader(t)))

	kvs := selftestKV(t, c)
	for i, kv := range kvs {
		want := "from-" + c.Name(i)
		if _, err := selftestPut(kv, "k", want, 5*time.Second); err != nil {
			t.Fatalf("put through %s: %v", c.Name(i), err)
		}
		for j, other := range kvs { // replicas serve reads: each sees it, eventually
			eventually(t, 10*time.Second, fmt.Sprintf("%s to read %q", c.Name(j), want), func() bool {
				got, err := selftestGet(other, "k")
				return err == nil && got == want
			})
		}
	}
	leader := c.StreamLeader(t, selftestStream)
	for i := range 3 {
		eventually(t, 10*time.Second, c.Name(i)+"'s replica to hold the 3 puts", func() bool {
			seq, ok := c.StreamLastSeq(t, i, selftestStream)
			return ok && seq == 3
		})
	}
	t.Logf("stream leader %s", c.Name(leader))
}

func TestPartitionedNodeCannotCommitWrites(t *testing.T) {
	c := startCluster(t, 3)
	kvs := selftestKV(t, c)
	if _, err := selftestPut(kvs[0], "k", "before", 5*time.Second); err != nil {
		t.Fatalf("put: %v", err)
	}
	// Partition a follower: the other two keep the leader and a quorum.
	p := (c.StreamLeader(t, selftestStream) + 1) % 3
	eventually(t, 10*time.Second, c.Name(p)+" to hold the first put", func() bool {
		seq, _ := c.StreamLastSeq(t, p, selftestStream)
		return seq == 1
	})

	c.Partition(p)
	eventually(t, 5*time.Second, c.Name(p)+" to lose every route", func() bool { return c.Server(p).NumRoutes() == 0 })
	begin := time.Now()
	if _, err := selftestPut(kvs[p], "k", "lost", 2*time.Second); err == nil {
		t.Fatalf("a put through partitioned %s was acknowledged", c.Name(p))
	} else {
		t.Logf("put through partitioned %s: %v (after %v)", c.Name(p), err, time.Since(begin).Round(time.Millisecond))
	}
	var last string
	for i := range 3 {
		if i == p {
			continue
		}
		last = "during-" + c.Name(i)
		if _, err := selftestPut(kvs[i], "k", last, 5*time.Second); err != nil {
			t.Fatalf("put through %s while %s is partitioned: %v", c.Name(i), c.Name(p), err)
		}
	}
	leaderSeq, _ := c.StreamLastSeq(t, c.StreamLeader(t, selftestStream), selftestStream)
	if seq, _ := c.StreamLastSeq(t, p, selftestStream); seq >= leaderSeq {
		t.Fatalf("partitioned %s's replica is at %d, the leader's at %d", c.Name(p), seq, leaderSeq)
	}
	if got, err := selftestGet(kvs[p], "k"); err == nil && got != "before" {
		t.Fatalf("partitioned %s serves %q, a value written while it was cut off", c.Name(p), got)
	}

	c.Heal(p)
	begin = time.Now()
	eventually(t, 20*time.Second, c.Name(p)+"'s replica to catch up", func() bool {
		seq, _ := c.StreamLastSeq(t, p, selftestStream)
		return seq == leaderSeq
	})
	eventually(t, 10*time.Second, c.Name(p)+" to serve the latest value", func() bool {
		got, err := selftestGet(kvs[p], "k")
		return err == nil && got == last
	})
	t.Logf("%s caught up %v after Heal", c.Name(p), time.Since(begin).Round(time.Millisecond))
	if _, err := selftestPut(kvs[p], "k", "after", 5*time.Second); err != nil {
		t.Fatalf("put through healed %s: %v", c.Name(p), err)
	}

	// Once healed, a second partition cuts every route again: none was
	// opened around the bridges (by gossip) while the routes came back.
	eventually(t, 10*time.Second, "every route back", func() bool {
		for i := range 3 {
			if c.Server(i).NumRoutes() == 0 {
				return false
			}
		}
		return true
	})
	c.Partition(p)
	eventually(t, 5*time.Second, c.Name(p)+" to lose every route again", func() bool { return c.Server(p).NumRoutes() == 0 })
	if _, err := selftestPut(kvs[p], "k", "lost again", time.Second); err == nil {
		t.Fatalf("a put through %s, partitioned again, was acknowledged", c.Name(p))
	}
	c.Heal(p)
}

func TestKilledStreamLeaderIsReplacedAndRestartCatchesUp(t *testing.T) {
	c := startCluster(t, 3)
	kvs := selftestKV(t, c)
	if _, err := selftestPut(kvs[0], "k", "before", 5*time.Second); err != nil {
		t.Fatalf("put: %v", err)
	}
	old := c.StreamLeader(t, selftestStream)
	other := (old + 1) % 3

	begin := time.Now()
	c.Kill(old)
	var seq uint64
	var firstErr error
	eventually(t, 25*time.Second, "a put through "+c.Name(other)+" after the leader was killed", func() bool {
		var err error
		seq, err = selftestPut(kvs[other], "k", "after-kill", time.Second)
		if firstErr == nil {
			firstErr = err
		}
		return err == nil
	})
	elected := time.Since(begin)
	leader := c.StreamLeader(t, selftestStream)
	if leader == old {
		t.Fatalf("the killed %s still leads", c.Name(old))
	}
	t.Logf("killed leader %s; %s leads; puts succeed again %v after the kill (first failure: %v)",
		c.Name(old), c.Name(leader), elected.Round(time.Millisecond), firstErr)

	begin = time.Now()
	c.Restart(old)
	t.Logf("Restart(%d) returned after %v", old, time.Since(begin).Round(time.Millisecond))
	eventually(t, 20*time.Second, "restarted "+c.Name(old)+"'s replica to catch up", func() bool {
		s, ok := c.StreamLastSeq(t, old, selftestStream)
		return ok && s >= seq
	})
	eventually(t, 10*time.Second, "restarted "+c.Name(old)+" to serve the latest value", func() bool {
		got, err := selftestGet(kvs[old], "k")
		return err == nil && got == "after-kill"
	})
	if _, err := selftestPut(kvs[old], "k", "after-restart", 5*time.Second); err != nil {
		t.Fatalf("put through restarted %s: %v", c.Name(old), err)
	}
	t.Logf("restarted %s caught up in %v", c.Name(old), time.Since(begin).Round(time.Millisecond))
}
