package main

import (
	"errors"
	"github.com/nats-io/nats.go/jetstream"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// stopAfter is watch's stdout in tests: it sends each line on lines and
// fails the write of the first line containing stop, which ends the watch
// (a failed write does) without a signal.
type stopAfter struct {
	lines chan string
	stop  string
}

func (w stopAfter) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	w.lines <- line
	if strings.Contains(line, w.stop) {
		return 0, errors.New("enough")
	}
	return len(p), nil
}

// TestWatchSinceReplaysThenFollows: watch --since prints the events the
// broker's stream kept from before the watch started, in order, then the
// new ones, each once.
func TestWatchSinceReplaysThenFollows(t *testing.T) {
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()}, broker.WithEventRetention(time.Hour))
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(e.Stop)
	ctx := testContext(t)
	c := e.Client
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	// Events of different requests are published in no set order (each
	// after its own reply): let the stream keep "created" before the
	// acquisition's events come.
	js, err := jetstream.New(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := js.Stream(ctx, broker.EventStream(messages.DefaultBucket))
		if err == nil && st.CachedInfo().State.Msgs >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the created event not kept within 10s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	l, err := c.Acquire(ctx, "db", 1, client.WithHolder("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	out := stopAfter{lines: make(chan string, 100), stop: " live created "}
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- execute([]string{"-s", e.URL, "watch", "--since", "1h"}, strings.NewReader(""), out, &stderr)
	}()
	next := func() []string {
		t.Helper()
		select {
		case l := <-out.lines:
			return strings.Fields(l)
		case <-time.After(10 * time.Second):
			t.Fatal("no event line within 10s")
			return nil
		}
	}
	var past []string
	for len(past) == 0 || past[len(past)-1] != "available" {
		f := next()
		if len(f) < 3 || f[1] != "db" {
			t.Fatalf("line %q, want one of db's events", strings.Join(f, " "))
		}
		if f[2] == "acquired" && !strings.Contains(strings.Join(f, " "), `holder="alice"`) {
			t.Errorf("acquired line %q without the holder", strings.Join(f, " "))
		}
		past = append(past, f[2])
	}
	if want := "created acquired released available"; strings.Join(past, " ") != want {
		t.Errorf("past events %q, want %q", strings.Join(past, " "), want)
	}
	// A live event, after the past ones and once.
	if _, err := c.CreateLimit(ctx, "live", 2); err != nil {
		t.Fatal(err)
	}
	if f := next(); len(f) < 3 || f[1] != "live" || f[2] != "created" {
		t.Fatalf("line %q, want live's created event", strings.Join(f, " "))
	}
	select {
	case code := <-done:
		if code != exitFailure || !strings.Contains(stderr.String(), "write event") {
			t.Fatalf("exit %d, stderr %q: want 1 after the failed write", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end after its failed write")
	}
	if len(out.lines) > 0 {
		t.Errorf("unexpected line after the live event: %q", <-out.lines)
	}
}

// TestWatchSinceWithoutRetention: against a broker that keeps no events,
// watch --since says how to keep them and exits 69.
func TestWatchSinceWithoutRetention(t *testing.T) {
	e := embeddedBroker(t)
	code, stdout, stderr := at(e, "watch", "--since", "10m")
	if code != exitUnavailable || stdout != "" ||
		!strings.Contains(stderr, "events are not kept: start slotbroker with --event-retention 1h to replay them") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestWatchSinceNegative: a negative --since is a usage error.
func TestWatchSinceNegative(t *testing.T) {
	e := embeddedBroker(t)
	if code, _, stderr := at(e, "watch", "--since", "-1m"); code != exitUsage || !strings.Contains(stderr, "--since") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
