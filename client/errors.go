package client

import (
	"context"
	"errors"

	"github.com/slotbroker/slotbroker/messages"
)

// Sentinel errors. Errors from the broker wrap one of these and the wire
// *messages.Error; match them with errors.Is.
var (
	// ErrNotFound: the limit does not exist (strict acquisition, admin verbs,
	// or the limit was deleted while waiting).
	ErrNotFound = errors.New("slotbroker: limit not found")
	// ErrExists: create of a limit that already exists.
	ErrExists = errors.New("slotbroker: limit already exists")
	// ErrInactive: strict acquisition of an inactive limit.
	ErrInactive = errors.New("slotbroker: limit is inactive")
	// ErrInvalidName: a limit name breaks the naming rules.
	ErrInvalidName = errors.New("slotbroker: invalid limit name")
	// ErrInvalidOccupy: occupy <= 0, or greater than the limit.
	ErrInvalidOccupy = errors.New("slotbroker: invalid occupy")
	// ErrInvalidArgument: another argument is out of range.
	ErrInvalidArgument = errors.New("slotbroker: invalid argument")
	// ErrNoSlots: a try variant found no free slots.
	ErrNoSlots = errors.New("slotbroker: no slots available")
	// ErrLeaseLost: a lease expired or was voided while held.
	ErrLeaseLost = errors.New("slotbroker: lease lost")
	// ErrNotRateLimit: rate admission on a limit without slot decay.
	ErrNotRateLimit = errors.New("slotbroker: limit has no slot decay")
	// ErrUnavailable: no broker answered, or it could not persist the request.
	ErrUnavailable = errors.New("slotbroker: broker unavailable")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("slotbroker: client closed")
	// ErrPermissionDenied: the broker refused a request that reaches outside
	// its subject's limit (code forbidden), or the NATS server refused to
	// let this connection's user publish a request or subscribe to the
	// grant inbox. The error's message names the subject.
	ErrPermissionDenied = errors.New("slotbroker: permission denied")
	// ErrTooManyWaiters: the broker queues no more waiters for this
	// requester's inbox (or at all) until some are granted or give up.
	ErrTooManyWaiters = errors.New("slotbroker: too many waiters")
	// ErrTimeout: the wait timed out. It also matches context.DeadlineExceeded.
	ErrTimeout error = timeoutError{}
)

type timeoutError struct{}

func (timeoutError) Error() string { return "slotbroker: timed out waiting for slots" }

// Is makes ErrTimeout match context.DeadlineExceeded.
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

var sentinels = map[messages.Code]error{
	messages.CodeNotFound:        ErrNotFound,
	messages.CodeExists:          ErrExists,
	messages.CodeInactive:        ErrInactive,
	messages.CodeInvalidName:     ErrInvalidName,
	messages.CodeInvalidOccupy:   ErrInvalidOccupy,
	messages.CodeInvalidArgument: ErrInvalidArgument,
	messages.CodeBadRequest:      ErrInvalidArgument,
	messages.CodeNoSlots:         ErrNoSlots,
	messages.CodeLeaseNotFound:   ErrLeaseLost,
	messages.CodeRevoked:         ErrLeaseRevoked,
	messages.CodeNotRateLimit:    ErrNotRateLimit,
	messages.CodeForbidden:       ErrPermissionDenied,
	messages.CodeTooManyWaiters:  ErrTooManyWaiters,
	messages.CodeUnavailable:     ErrUnavailable,
	messages.CodeInternal:        ErrUnavailable,
}

// brokerError is an error answered by the broker: its message, its sentinel
// and the wire error.
type brokerError struct {
	wire     *messages.Error
	sentinel error
}

func (e *brokerError) Error() string   { return "slotbroker: " + e.wire.Message }
func (e *brokerError) Unwrap() []error { return []error{e.sentinel, e.wire} }

// fromWire turns a reply's error into a Go error (nil for nil).
func fromWire(e *messages.Error) error {
	if e == nil {
		return nil
	}
	s, ok := sentinels[e.Code]
	if !ok {
		s = ErrUnavailable
	}
	return &brokerError{wire: e, sentinel: s}
}
