package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if an example leaves goroutines behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
