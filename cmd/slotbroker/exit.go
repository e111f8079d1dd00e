package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/slotbroker/slotbroker/broker"
)

// Exit statuses, after sysexits.h.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 64  // EX_USAGE: unknown flag, stray argument
	exitUnavailable = 69  // EX_UNAVAILABLE: port taken, NATS unreachable, no JetStream
	exitConfig      = 78  // EX_CONFIG: bad value, unreadable config, TLS or data files
	exitInterrupted = 130 // a second SIGINT/SIGTERM during shutdown
)

// Sentinel errors that choose the exit status.
var (
	// errUsage wraps command-line usage errors (exit 64).
	errUsage = errors.New("usage")
	// errConfig wraps bad settings and unusable files (exit 78).
	errConfig = errors.New("configuration")
	// errUnavailable wraps servers that cannot be started or reached (exit 69).
	errUnavailable = errors.New("unavailable")
)

// exitStatus maps an error to the process exit status.
func exitStatus(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, errConfig), errors.Is(err, broker.ErrConfig):
		return exitConfig
	case errors.Is(err, errUnavailable), errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrStore):
		return exitUnavailable
	default:
		return exitFailure
	}
}

// tagged wraps a message under a sentinel without putting the sentinel's
// text into the message: the user sees only what to fix.
type tagged struct {
	kind error
	msg  string
}

func (e *tagged) Error() string { return e.msg }
func (e *tagged) Unwrap() error { return e.kind }

func usageErr(format string, args ...any) error {
	return &tagged{errUsage, fmt.Sprintf(format, args...)}
}

func configErr(format string, args ...any) error {
	return &tagged{errConfig, fmt.Sprintf(format, args...)}
}

func unavailableErr(format string, args ...any) error {
	return &tagged{errUnavailable, fmt.Sprintf(format, args...)}
}

// reportError writes err as one line on w, without the broker's sentinel
// prefixes.
func reportError(w io.Writer, err error) {
	msg := err.Error()
	for _, s := range []error{broker.ErrConfig, broker.ErrUnavailable, broker.ErrStore} {
		msg = strings.ReplaceAll(msg, s.Error()+": ", "")
	}
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintf(w, "slotbroker: %s\n", msg)
}
