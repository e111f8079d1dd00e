package main

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// lineWriter sends each write (one warning line) on a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// TestWatchReportsLostAndRegainedConnection: a watch says on stderr when its
// connection to NATS goes (a broker outage: the daemon's embedded server
// stops) and when it is back, since the events published meanwhile are missed.
func TestWatchReportsLostAndRegainedConnection(t *testing.T) {
	start := func(port int) *server.Server {
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready within 10s")
		}
		return s
	}
	s := start(-1)
	port := s.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lines := make(lineWriter, 10)
	a := &app{stderr: lines, warn: slog.New(newWarnHandler(lines))}
	stop := a.reportConnection(nc, true)
	defer stop()
	want := func(what string) {
		t.Helper()
		select {
		case l := <-lines:
			if !strings.HasPrefix(l, "slotctl: ") || !strings.Contains(l, what) {
				t.Fatalf("stderr line %q, want one containing %q", l, what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no line containing %q within 10s", what)
		}
	}

	s.Shutdown()
	s.WaitForShutdown()
	want("lost the connection to NATS")
	s = start(port)
	defer s.Shutdown()
	want("reconnected to " + s.ClientURL() + "; events published while disconnected were missed")
	select {
	case l := <-lines:
		t.Fatalf("unexpected line %q", l)
	default:
	}
}

// TestWatchLineNamesTheKeyOfAPerKeyLimit: the events of every key of a
// per-key limit carry the family as their limit and the key apart
// (PROTOCOL.md §15). watch's line must name the key: without it, the lines
// of two keys cannot be told apart, and "available=0" reads as the
// family's slots when it is one key's.
func TestWatchLineNamesTheKeyOfAPerKeyLimit(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The events watch gets, subscribed to before the acquisitions.
	msgs := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe(e.Broker.Subjects().Event("tenant", messages.EventAcquired), msgs); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"acme", "globex"} {
		if _, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey(key)); err != nil {
			t.Fatal(err)
		}
		var ev client.Event
		select {
		case m := <-msgs:
			if _, err := messages.Decode(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("no acquired event for key %s", key)
		}
		if line := eventLine(ev); !strings.Contains(line, key) {
			t.Errorf("watch's line of an acquisition of key %s (event key %q) does not name the key: %s", key, ev.Key, line)
		}
	}
}
