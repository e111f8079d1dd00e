package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// profileEnv names a file to write a CPU profile of the whole daemon to,
// from start to shutdown (for benchmarks: see BENCHMARKS.md).
const profileEnv = "SLOTBROKER_CPUPROFILE"

// startProfile starts the CPU profile when profileEnv is set; the returned
// function stops it.
func startProfile(stderr io.Writer) func() {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "slotbroker: %s: %v (running without a profile)\n", profileEnv, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
