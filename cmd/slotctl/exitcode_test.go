package main

import (
	"fmt"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// TestExitStatusOfPermissionAndWaiterErrors: a permission denied (by the
// NATS server or the broker) exits 77, too many waiters 75.
func TestExitStatusOfPermissionAndWaiterErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: the NATS user lacks publish permission on %q", client.ErrPermissionDenied, "x"), exitNoPerm},
		{fmt.Errorf("run: %w", client.ErrPermissionDenied), 77},
		{fmt.Errorf("%w: the inbox has 100 waiters", client.ErrTooManyWaiters), exitTempFail},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exit status for %v: %d, want %d", c.err, got, c.want)
		}
	}
}
