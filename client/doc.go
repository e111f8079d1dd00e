// Package client is the Go API of slotbroker: acquire and release slots of
// named concurrency limits shared through NATS, take rate-limit admissions,
// and manage the limits.
//
// A Client has three main methods. Acquire blocks until the slots are granted
// and returns a Lease, which the client renews in the background until
// Release; TryAcquire never waits; Do runs a function while holding the
// slots. Waiting callers queue at the broker in FIFO order and are woken by a
// grant the broker pushes; nothing polls. A Client is safe for concurrent use.
package client
