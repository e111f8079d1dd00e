package main

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
