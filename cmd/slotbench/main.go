// Command slotbench measures slotbroker against its floor (plain NATS and
// JetStream KV) and its peer (a Redis semaphore and redis_rate) in one
// invocation, so that every figure can be read as a ratio to a baseline
// measured on the same machine at the same time.
//
// Run it from the module root:
//
//	go run ./cmd/slotbench [--quick] [--only a,b,...] [--out FILE.json]
//
// It builds ./cmd/slotbroker, starts it as a separate process, starts a
// redis-server when one is installed, and stops both when it ends. It never
// asserts timings; BENCHMARKS.md records the latest figures.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "slotbench:", err)
		os.Exit(1)
	}
}
