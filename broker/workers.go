package broker

import "time"

// Work that waits (for writes to be acknowledged, for a pushed grant's
// answer) runs on a pool of goroutines that outlive one request: a fresh
// goroutine per request spent a measurable share of the broker's CPU growing
// its stack (runtime.copystack under scenario e of BENCHMARKS.md).

// workerIdle is how long an idle worker waits for more work before it ends.
const workerIdle = 5 * time.Second

// spawn runs f on an idle worker, or on a new one when none is idle.
func (b *Broker) spawn(f func()) {
	select {
	case b.work <- f:
	default:
		b.workers.Add(1)
		go b.worker(f)
	}
}

// worker runs f, then further work until it has been idle for workerIdle or
// the broker stops.
func (b *Broker) worker(f func()) {
	defer b.workers.Done()
	f()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case f := <-b.work:
			f()
			idle.Reset(workerIdle)
		case <-idle.C:
			return
		case <-b.quit:
			return
		}
	}
}
