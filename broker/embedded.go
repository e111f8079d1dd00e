package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/client"
)

// NATSConfig configures an embedded nats-server with JetStream.
type NATSConfig struct {
	// Listen is the client address, HOST:PORT; port 0 or "" picks a free port on 127.0.0.1.
	Listen string
	// StoreDir is the JetStream store directory (required).
	StoreDir string
	// SyncInterval is how often JetStream fsyncs (0: the server's default, 2 minutes).
	SyncInterval time.Duration
	// SyncAlways makes JetStream fsync every write before acknowledging it.
	SyncAlways bool
	// ServerName names the server (default "slotbroker").
	ServerName string
}

// StartNATS starts an embedded nats-server with JetStream and waits until it
// takes connections. The caller shuts it down with Shutdown and WaitForShutdown.
func StartNATS(cfg NATSConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, configErr("nats store directory is empty: give a data directory")
	}
	host, port := "127.0.0.1", -1
	if cfg.Listen != "" {
		h, p, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, configErr("listen address %q: %v (use HOST:PORT)", cfg.Listen, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			return nil, configErr("listen address %q: port must be 0 to 65535", cfg.Listen)
		}
		if h != "" {
			host = h
		}
		if n != 0 {
			port = n
		}
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, configErr("data directory %q cannot be created: %v", cfg.StoreDir, err)
	}
	if f, err := os.CreateTemp(cfg.StoreDir, ".probe-*"); err != nil {
		return nil, configErr("data directory %q is not writable: %v", cfg.StoreDir, err)
	} else {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if port > 0 {
		// nats-server would log and exit the process on a taken port; check first.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("%w: cannot listen on %s: %v (is another server running? use --listen to pick another address)", ErrUnavailable, net.JoinHostPort(host, strconv.Itoa(port)), err)
		}
		_ = ln.Close()
	}
	name := cfg.ServerName
	if name == "" {
		name = "slotbroker"
	}
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: host, Port: port, JetStream: true, StoreDir: cfg.StoreDir,
		SyncInterval: cfg.SyncInterval, SyncAlways: cfg.SyncAlways, NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, configErr("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("%w: embedded nats server did not start within 10s", ErrUnavailable)
	}
	return s, nil
}

// Embedded is an in-process NATS server with JetStream, a Broker on it and a
// ready Client. Made by NewEmbedded or StartEmbedded.
type Embedded struct {
	Server *server.Server
	// URL is the server's client URL, for more connections.
	URL    string
	Conn   *nats.Conn
	Broker *Broker
	Client *client.Client
	dir    string
	ownDir bool
}

// EmbeddedConfig configures NewEmbedded.
type EmbeddedConfig struct {
	// StoreDir is the JetStream directory; empty means a new temporary one,
	// removed by Stop.
	StoreDir string
	// Listen is the client address; empty means a free port on 127.0.0.1.
	Listen string
}

// NewEmbedded starts NATS with JetStream, a Broker with opts, and a Client.
func NewEmbedded(cfg EmbeddedConfig, opts ...Option) (*Embedded, error) {
	e := &Embedded{dir: cfg.StoreDir}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "slotbroker-*")
		if err != nil {
			return nil, configErr("temporary directory: %v", err)
		}
		e.dir, e.ownDir = d, true
	}
	s, err := StartNATS(NATSConfig{Listen: cfg.Listen, StoreDir: e.dir})
	if err != nil {
		e.cleanup()
		return nil, err
	}
	e.Server, e.URL = s, s.ClientURL()
	if e.Conn, err = nats.Connect(e.URL, nats.Name("slotbroker-embedded")); err != nil {
		e.Stop()
		return nil, fmt.Errorf("%w: connect: %v", ErrUnavailable, err)
	}
	opts = append([]Option{WithEventInterest(ServerInterest(s))}, opts...)
	if e.Broker, err = New(e.Conn, opts...); err != nil {
		e.Stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err = e.Broker.Start(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	if e.Client, err = client.New(e.Conn, client.WithPrefix(e.Broker.opts.prefix)); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Dir is the JetStream store directory.
func (e *Embedded) Dir() string { return e.dir }

// Stop closes the client, stops the broker and the server, and removes a
// temporary store directory. It is safe to call more than once.
func (e *Embedded) Stop() {
	if e.Client != nil {
		_ = e.Client.Close()
	}
	if e.Broker != nil {
		_ = e.Broker.Stop()
	}
	if e.Conn != nil {
		e.Conn.Close()
	}
	if e.Server != nil {
		e.Server.Shutdown()
		e.Server.WaitForShutdown()
	}
	e.cleanup()
}

func (e *Embedded) cleanup() {
	if e.ownDir {
		_ = os.RemoveAll(e.dir)
	}
}

// StartEmbedded is the one call for a user's tests: it starts NATS in-process
// with JetStream in a temporary directory plus a Broker, and returns a ready
// Client and a stop function. When tb is not nil, stop is also registered
// with tb.Cleanup, and a failure to start fails the test.
func StartEmbedded(tb testing.TB, opts ...Option) (*client.Client, func(), error) {
	e, err := NewEmbedded(EmbeddedConfig{}, opts...)
	if err != nil {
		if tb != nil {
			tb.Fatalf("slotbroker: start embedded broker: %v", err)
		}
		return nil, nil, err
	}
	if tb != nil {
		tb.Cleanup(e.Stop)
	}
	return e.Client, e.Stop, nil
}

// ServerInterest reports whether s, a server started by StartNATS (one
// server, no accounts), has a subscriber for a subject; for WithEventInterest.
func ServerInterest(s *server.Server) func(subject string) bool {
	return s.GlobalAccount().SubscriptionInterest
}
