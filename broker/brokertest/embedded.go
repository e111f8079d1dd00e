// Package brokertest runs slotbroker in-process for tests: a NATS server
// with JetStream in a temporary directory, a Broker on it and a Client, in
// one call (StartEmbedded) or with more control (NewEmbedded).
package brokertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// Embedded is an in-process NATS server with JetStream, a Broker on it and a
// ready Client. Made by NewEmbedded or StartEmbedded.
type Embedded struct {
	Server *server.Server
	// URL is the server's client URL, for more connections.
	URL    string
	Conn   *nats.Conn
	Broker *broker.Broker
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
func NewEmbedded(cfg EmbeddedConfig, opts ...broker.Option) (*Embedded, error) {
	e := &Embedded{dir: cfg.StoreDir}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "slotbroker-*")
		if err != nil {
			return nil, fmt.Errorf("%w: temporary directory: %v", broker.ErrConfig, err)
		}
		e.dir, e.ownDir = d, true
	}
	s, err := broker.StartNATS(broker.NATSConfig{Listen: cfg.Listen, StoreDir: e.dir})
	if err != nil {
		e.cleanup()
		return nil, err
	}
	e.Server, e.URL = s, s.ClientURL()
	if e.Conn, err = nats.Connect(e.URL, nats.Name("slotbroker-embedded")); err != nil {
		e.Stop()
		return nil, fmt.Errorf("%w: connect: %v", broker.ErrUnavailable, err)
	}
	opts = append([]broker.Option{broker.WithEventInterest(broker.ServerInterest(s))}, opts...)
	if e.Broker, err = broker.New(e.Conn, opts...); err != nil {
		e.Stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err = e.Broker.Start(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	if e.Client, err = client.New(e.Conn, client.WithPrefix(e.Broker.Subjects().Prefix)); err != nil {
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
func StartEmbedded(tb testing.TB, opts ...broker.Option) (*client.Client, func(), error) {
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
