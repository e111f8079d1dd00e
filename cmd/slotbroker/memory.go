package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the daemon's garbage-collector target when GOGC is not
// set. The broker holds many small long-lived objects (a lease or a queued
// waiter is a few hundred bytes); Go's default of 100 lets the heap grow to
// twice the live data before collecting. 50 keeps resident memory under 1 KiB
// per lease and per waiter (BENCHMARKS.md, scenario g) for a little more
// collection work.
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent unless the operator set GOGC.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}
