package client_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// Helpers for tests that need a NATS server but no broker: the test's own
// connection answers the client's requests in place of one ("stand-in"),
// so a test sees exactly what the client sends and decides what it gets.

// plainServer starts an in-process nats-server without JetStream or broker,
// shut down when the test ends. With users, only they may connect.
func plainServer(t *testing.T, users ...*server.User) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	return s
}

// connect opens a connection to s, closed when the test ends. Its async
// errors (a permissions violation) are dropped unless opts set a handler.
func connect(t *testing.T, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// clientOn is a Client on nc, closed when the test ends.
func clientOn(t *testing.T, nc *nats.Conn, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// standIn subscribes nc to subject (wildcards allowed) and returns the
// messages it gets, for the test to answer.
func standIn(t *testing.T, nc *nats.Conn, subject string) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 4096)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if strings.Contains(subject, ".acquire") {
		// A stand-in broker also holds the leases it grants: the client
		// confirms a pushed grant by renewing it before using it.
		renew, err := nc.Subscribe(strings.SplitN(subject, ".acquire", 2)[0]+".renew.>", func(m *nats.Msg) {
			data, _ := messages.Marshal(messages.Detect(m.Data), messages.RenewReply{TTLMillis: 30_000, ExpiresAt: time.Now().Add(30 * time.Second)})
			_ = m.Respond(data)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = renew.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// next returns the next message of ch, failing the test after 10 s.
func next(t *testing.T, ch <-chan *nats.Msg, what string) *nats.Msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
		return nil
	}
}

// decode decodes a message's body into v, failing the test otherwise.
func decode(t *testing.T, m *nats.Msg, v any) {
	t.Helper()
	if _, err := messages.Decode(m.Data, v); err != nil {
		t.Fatalf("decode %s: %v", m.Subject, err)
	}
}

// respond answers m with v, JSON-encoded.
func respond(t *testing.T, m *nats.Msg, v any) {
	t.Helper()
	data, err := messages.Marshal(messages.JSON, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Respond(data); err != nil {
		t.Fatal(err)
	}
}

// publish publishes v, JSON-encoded, to subject with reply ("" for none).
func publish(t *testing.T, nc *nats.Conn, subject, reply string, v any) {
	t.Helper()
	data, err := messages.Marshal(messages.JSON, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: data}); err != nil {
		t.Fatal(err)
	}
}

// testContext is a context ended after 30 s or with the test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// logRecorder is a slog.Handler that keeps the records logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

// matching returns the records at level whose message contains msg, each
// rendered as "message key=value ...".
func (r *logRecorder) matching(level slog.Level, msg string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		if rec.Level != level || !strings.Contains(rec.Message, msg) {
			continue
		}
		var b strings.Builder
		b.WriteString(rec.Message)
		rec.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.Key + "=" + a.Value.String())
			return true
		})
		out = append(out, b.String())
	}
	return out
}
