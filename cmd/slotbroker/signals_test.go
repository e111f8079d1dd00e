package main

import (
	"context"
	"log/slog"
	"syscall"
	"testing"
	"time"
)

// TestDaemonSignals sends real signals to the test process: the first
// cancels the context, the second exits with status 130.
func TestDaemonSignals(t *testing.T) {
	exited := make(chan int, 1)
	ctx, stop := watchSignals(context.Background(), slog.New(slog.DiscardHandler), func(code int) { exited <- code })
	defer stop()

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Minute):
		t.Fatal("first SIGTERM did not cancel the context")
	}
	select {
	case code := <-exited:
		t.Fatalf("exit(%d) after the first signal", code)
	default:
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != exitInterrupted {
			t.Fatalf("exit status %d after the second signal, want %d", code, exitInterrupted)
		}
	case <-time.After(time.Minute):
		t.Fatal("second signal did not exit")
	}
}
