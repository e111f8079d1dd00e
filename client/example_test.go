package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
)

// Acquire holds slots until Release; the lease is renewed in the background.
func ExampleClient_Acquire() {
	c, stop, err := brokertest.StartEmbedded(nil) // in a test: brokertest.StartEmbedded(t)
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	if _, err := c.CreateLimit(ctx, "database", 2); err != nil {
		log.Fatal(err)
	}

	lease, err := c.Acquire(ctx, "database", 1, client.WithHolder("example"))
	if err != nil {
		log.Fatal(err)
	}
	info, _ := c.GetLimit(ctx, "database")
	fmt.Println("active slots while held:", info.ActiveSlots)
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	info, _ = c.GetLimit(ctx, "database")
	fmt.Println("active slots after release:", info.ActiveSlots)
	// Output:
	// active slots while held: 1
	// active slots after release: 0
}

// Do runs a function while holding the slots and releases them however it ends.
func ExampleClient_Do() {
	c, stop, err := brokertest.StartEmbedded(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	ctx := context.Background()
	if _, err := c.CreateLimit(ctx, "data-processing", 5); err != nil {
		log.Fatal(err)
	}
	err = c.Do(ctx, "data-processing", 5, func(ctx context.Context) error {
		fmt.Println("processing a batch of 5")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// processing a batch of 5
	// done: <nil>
}

// The README's Go client example ("The Go client"), line for line but for
// the server's URL: every error checked, the connection and the Client closed.
func Example_readme() {
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Stop()
	query := func(ctx context.Context, token uint64) { fmt.Println("query with a fencing token:", token > 0) }
	work := func(ctx context.Context) error { fmt.Println("work"); return nil }

	run := func(ctx context.Context) error {
		nc, err := nats.Connect(e.URL) // README: nats.DefaultURL
		if err != nil {
			return err
		}
		defer nc.Close()
		c, err := client.New(nc) // github.com/slotbroker/slotbroker/client
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.CreateLimit(ctx, "database", 10); err != nil && !errors.Is(err, client.ErrExists) {
			return err // once, or with slotctl
		}

		lease, err := c.Acquire(ctx, "database", 1, client.WithTimeout(30*time.Second))
		if err != nil {
			return err // errors.Is(err, client.ErrTimeout), ErrNotFound (strict), ...
		}
		defer lease.Release(ctx)
		query(lease.Context(), lease.Token()) // ctx ends if the lease is lost; pass the fencing token on

		return c.Do(ctx, "database", 1, func(ctx context.Context) error { return work(ctx) })
	}
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// query with a fencing token: true
	// work
}
