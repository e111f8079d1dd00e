package main

import (
	"context"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker/brokertest"
)

// embeddedBroker starts NATS with JetStream and a broker in-process for one
// test; Stop runs at the test's end.
func embeddedBroker(t *testing.T) *brokertest.Embedded {
	t.Helper()
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(e.Stop)
	return e
}

// at runs slotctl with args against e's server and returns its exit status,
// stdout and stderr.
func at(e *brokertest.Embedded, args ...string) (int, string, string) {
	return slotctl(append([]string{"-s", e.URL}, args...)...)
}

// testContext is a context that ends with the test, or after 20 s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
