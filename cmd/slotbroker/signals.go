package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// watchSignals returns a context cancelled by the first SIGINT or SIGTERM,
// which starts a graceful shutdown. A second signal logs and calls exit with
// status 130 at once. stop ends the watching.
func watchSignals(parent context.Context, log *slog.Logger, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			log.Info("shutting down: stopping requests, finishing the ones in flight, flushing state (signal again to exit at once)", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			log.Error("second signal: exiting at once without a clean shutdown", "signal", sig.String(), "status", exitInterrupted)
			exit(exitInterrupted)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}
