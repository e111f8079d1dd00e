package integration

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
)

// TestStartIsNotFailedByARefusedPublishNamingSubscription: a broker's start
// checks that the server took its own subscriptions. It used to look for
// "Subscription" anywhere in the connection's last error, and a refused
// publish names its subject, which clients choose through reply and notify
// subjects: a publish refused to "Subscription.r.r" made the start fail
// with exit 69, blaming subscribe permissions that were fine. Only a
// violation naming one of the service's subjects as a subscription counts.
func TestStartIsNotFailedByARefusedPublishNamingSubscription(t *testing.T) {
	x := newAuthEnv(t, 0)
	if code := x.d.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("daemon exit status %d", code)
	}
	nc := x.connect(t, natsUser{"broker", "broker-pw", "_INBOX.slotbroker"})
	if err := nc.Publish("Subscription.r.r", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the server's refusal of the publish", func() bool {
		return errors.Is(nc.LastError(), nats.ErrPermissionViolation)
	})
	b, err := broker.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start after a refused publish to a subject naming Subscription: %v", err)
	}
	if _, err := x.ops.ListLimits(ctx); err != nil {
		t.Fatalf("the in-process broker does not serve: %v", err)
	}
}
