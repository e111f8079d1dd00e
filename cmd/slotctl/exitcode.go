package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// Exit statuses, after sysexits.h. The rule between 64 and 65: a value the
// user typed that is invalid in itself is a usage error, whoever finds it so
// (slotctl, the client library or the broker: a --lease-ttl outside the
// broker's bounds); what the limits' state refuses (the name exists or not,
// occupy above its limit, inactive under --strict) is a data error, and so is
// a bad limit name (documented as such since the first release).
const (
	exitOK          = 0 // success; also a delete declined at its prompt
	exitFailure     = 1
	exitUsage       = 64 // EX_USAGE: unknown command or flag, bad arguments, invalid flag values
	exitDataErr     = 65 // EX_DATAERR: bad name, or refused by the limits' state (exists, not found, occupy above the limit, not a rate limit, missing or inactive under --strict)
	exitUnavailable = 69 // EX_UNAVAILABLE: broker or NATS unreachable
	exitTempFail    = 75 // EX_TEMPFAIL: timed out waiting (--timeout), no slot free (--try), or too many waiters
	exitNoPerm      = 77 // EX_NOPERM: permission denied by the NATS server or the broker
)

// Sentinel errors of slotctl itself.
var (
	// errUsage marks a usage error: bad flags, missing arguments, no change given.
	errUsage = errors.New("usage error")
	// errUnreachable marks a failure to connect to the NATS server.
	errUnreachable = errors.New("cannot connect to the NATS server")
	// errAborted marks an operation the user declined at a prompt (delete
	// no longer fails for that: it says "not deleted" and exits 0).
	errAborted = errors.New("aborted")
	// errInterrupted marks a wait ended by a signal.
	errInterrupted = errors.New("interrupted")
)

// usageError is a usage error with its message.
func usageError(format string, args ...any) error {
	return &msgError{msg: fmt.Sprintf(format, args...), kind: errUsage}
}

// flagValueError makes err a usage error when the client or the broker
// refused a request as invalid_argument: the request carries only what the
// user typed (flag values such as --lease-ttl, --holder, --limit and
// --slot-decay-per-second, the number of limit names), so one of those is
// invalid. Other errors come back as they are.
func flagValueError(err error) error {
	var wire *messages.Error
	// A key given for a plain limit, or none for a per-key one, is the
	// limit's kind, not a flag's value: a data error, as inspect says.
	if errors.As(err, &wire) && wire.Code == messages.CodeInvalidArgument && !strings.Contains(wire.Message, "per-key") {
		return &msgError{msg: err.Error(), kind: errUsage}
	}
	return err
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
