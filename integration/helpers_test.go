package integration

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// env is a real nats-server with JetStream (random port, own store dir) and a broker.
type env struct {
	t   testing.TB
	e   *brokertest.Embedded
	dir string
}

func newEnv(t testing.TB, opts ...broker.Option) *env {
	t.Helper()
	dir := t.TempDir()
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: dir}, opts...)
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	ev := &env{t: t, e: e, dir: dir}
	t.Cleanup(func() { ev.e.Stop() })
	return ev
}

// client returns a client on a new connection of its own.
func (ev *env) client(opts ...client.Option) *client.Client {
	ev.t.Helper()
	nc := ev.conn()
	c, err := client.New(nc, opts...)
	if err != nil {
		ev.t.Fatalf("client: %v", err)
	}
	ev.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (ev *env) conn() *nats.Conn {
	ev.t.Helper()
	nc, err := nats.Connect(ev.e.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ev.t.Fatalf("connect: %v", err)
	}
	ev.t.Cleanup(nc.Close)
	return nc
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads
// (a process's output, a logger's buffer).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// brokerHousekeeping tells whether subject is one of the brokers' own
// periodic writes, not part of any request: the leader lease's renewals
// and the brokers' status keys (PROTOCOL.md §14.1).
func brokerHousekeeping(subject string) bool {
	return strings.HasPrefix(subject, "$KV.") &&
		(strings.HasSuffix(subject, "."+messages.LeaderKey) || strings.Contains(subject, "."+messages.BrokerKeyPrefix))
}
