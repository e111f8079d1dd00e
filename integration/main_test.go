package integration

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind: a lease
// still renewing, a broker still timing, a client still waiting.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
