package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestDeleteAnsweredNoExitsZero: delete answered anything but y at its
// prompt deletes nothing, says so and exits 0 (documented in --help), and
// asks no broker.
func TestDeleteAnsweredNoExitsZero(t *testing.T) {
	old := isTerminal
	isTerminal = func(io.Reader) bool { return true }
	t.Cleanup(func() { isTerminal = old })
	for _, answer := range []string{"n\n", "\n", ""} {
		var stdout, stderr bytes.Buffer
		// An unreachable server: asking it would exit 69.
		code := execute([]string{"-s", "nats://127.0.0.1:1", "delete", "db"}, strings.NewReader(answer), &stdout, &stderr)
		if code != exitOK || !strings.Contains(stderr.String(), "Delete limit db? [y/N] ") || !strings.Contains(stderr.String(), "not deleted") {
			t.Errorf("delete db answered %q: exit %d, stderr %q; want 0 and \"not deleted\"", answer, code, stderr.String())
		}
	}
	if _, stdout, _ := slotctl("delete", "--help"); !strings.Contains(stdout, "not deleted") || !strings.Contains(stdout, "exits 0") {
		t.Errorf("delete --help does not document the exit status of a declined prompt:\n%s", stdout)
	}
}
