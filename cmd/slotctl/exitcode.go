package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/slotbroker/slotbroker/client"
)

// Exit statuses, after sysexits.h.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 64 // EX_USAGE: bad flags or arguments
	exitDataErr     = 65 // EX_DATAERR: invalid input refused by the broker
	exitUnavailable = 69 // EX_UNAVAILABLE: broker or NATS unreachable
	exitTempFail    = 75 // EX_TEMPFAIL: timed out waiting, or too many waiters
	exitNoPerm      = 77 // EX_NOPERM: permission denied by the NATS server or the broker
)

// Sentinel errors of slotctl itself.
var (
	// errUsage marks a usage error: bad flags, missing arguments, no change given.
	errUsage = errors.New("usage error")
	// errUnreachable marks a failure to connect to the NATS server.
	errUnreachable = errors.New("cannot connect to the NATS server")
	// errAborted marks an operation the user declined at a prompt.
	errAborted = errors.New("aborted")
	// errInterrupted marks a wait ended by a signal.
	errInterrupted = errors.New("interrupted")
)

// usageError is a usage error with its message.
func usageError(format string, args ...any) error {
	return &msgError{msg: fmt.Sprintf(format, args...), kind: errUsage}
}

// msgError is an error whose message is msg and which matches kind.
type msgError struct {
	msg  string
	kind error
}

func (e *msgError) Error() string { return e.msg }
func (e *msgError) Unwrap() error { return e.kind }

// exitStatus ends slotctl with code and prints nothing (the child's status of run).
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// signalStatus ends slotctl with 128+signal after printing its message.
type signalStatus struct {
	code int
	err  error
}

func (e *signalStatus) Error() string { return e.err.Error() }
func (e *signalStatus) Unwrap() error { return e.err }

// exitCode maps an error to slotctl's exit status.
func exitCode(err error) int {
	var st exitStatus
	var sig *signalStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &st):
		return st.code
	case errors.As(err, &sig):
		return sig.code
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, client.ErrPermissionDenied):
		return exitNoPerm
	case errors.Is(err, errUnreachable), errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrClosed):
		return exitUnavailable
	case errors.Is(err, client.ErrTimeout), errors.Is(err, client.ErrNoSlots), errors.Is(err, client.ErrTooManyWaiters):
		return exitTempFail
	case errors.Is(err, client.ErrInvalidName), errors.Is(err, client.ErrInvalidOccupy),
		errors.Is(err, client.ErrExists), errors.Is(err, client.ErrNotFound),
		errors.Is(err, client.ErrInvalidArgument), errors.Is(err, client.ErrNotRateLimit),
		errors.Is(err, client.ErrInactive):
		return exitDataErr
	default:
		return exitFailure
	}
}

// errorLine is the one line slotctl prints for err ("" for none), with
// what else could reach the terminal raw escaped (displayText).
func errorLine(err error) string {
	var st exitStatus
	if err == nil || errors.As(err, &st) {
		return ""
	}
	msg := strings.TrimPrefix(err.Error(), "slotbroker: ")
	msg = strings.ReplaceAll(msg, "\n", " ")
	return "slotctl: " + displayText(msg)
}
