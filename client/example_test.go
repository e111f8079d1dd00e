package client_test

import (
	"context"
	"fmt"
	"log"

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
