package main

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// stats summarises one measured loop.
type stats struct {
	N       int           // successful operations measured
	Errors  int           // operations that failed
	Elapsed time.Duration // measurement window
	P50     time.Duration
	P99     time.Duration
	Ops     float64 // successful operations per second
}

// summarize computes percentiles over lat (it sorts lat) and the rate of n
// operations over elapsed.
func summarize(lat []time.Duration, n int, elapsed time.Duration) stats {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	s := stats{N: n, Elapsed: elapsed}
	if len(lat) > 0 {
		s.P50 = pct(lat, 0.50)
		s.P99 = pct(lat, 0.99)
	}
	if elapsed > 0 {
		s.Ops = float64(n) / elapsed.Seconds()
	}
	return s
}

// pct is the q-quantile of sorted samples (nearest rank).
func pct(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// op is one operation of worker w; it reports whether it counts (a rate
// admission may be refused without error).
type op func(ctx context.Context, w int) (bool, error)

// loop runs workers goroutines calling fn back to back: warm up for warm,
// then measure for d the operations that started and ended in the window.
// It stops early on ctx or after too many errors and returns the first one.
func loop(ctx context.Context, workers int, warm, d time.Duration, fn op) (stats, error) {
	start := time.Now()
	from, to := start.Add(warm), start.Add(warm+d)
	var (
		mu       sync.Mutex
		all      []time.Duration
		n, nerr  int
		firstErr error
		failures atomic.Int64
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var cnt, errs int
			var ferr error
			for ctx.Err() == nil && failures.Load() < 100 {
				t0 := time.Now()
				if t0.After(to) {
					break
				}
				ok, err := fn(ctx, w)
				t1 := time.Now()
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					errs++
					failures.Add(1)
					if ferr == nil {
						ferr = err
					}
					continue
				}
				if ok && !t0.Before(from) && !t1.After(to) {
					lat = append(lat, t1.Sub(t0))
					cnt++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			n += cnt
			nerr += errs
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	s := summarize(all, n, d)
	s.Errors = nerr
	if ctx.Err() != nil {
		return s, ctx.Err()
	}
	if nerr > 0 && (n == 0 || nerr >= 100) {
		return s, errors.Join(errTooManyErrors, firstErr)
	}
	return s, nil
}

var errTooManyErrors = errors.New("too many failed operations")
