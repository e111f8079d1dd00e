package messages

import "fmt"

// Code is a machine-readable error code carried in Error.Code.
type Code string

// Error codes. Clients map each to a sentinel error.
const (
	CodeBadRequest      Code = "bad_request"      // the request could not be decoded or is malformed
	CodeInvalidName     Code = "invalid_name"     // a limit name breaks the naming rules
	CodeInvalidOccupy   Code = "invalid_occupy"   // occupy <= 0 or greater than the limit
	CodeInvalidArgument Code = "invalid_argument" // another field is out of range
	CodeNotFound        Code = "not_found"        // the limit does not exist (strict, admin verbs, deleted while waiting)
	CodeExists          Code = "exists"           // create of a name that exists
	CodeInactive        Code = "inactive"         // strict acquisition on an inactive limit
	CodeNoSlots         Code = "no_slots"         // try-acquire found no free slots
	CodeLeaseNotFound   Code = "lease_not_found"  // renew of a lease the broker does not hold (expired, released, voided)
	CodeNotRateLimit    Code = "not_rate_limit"   // rate admission on a limit without slot decay
	CodeForbidden       Code = "forbidden"        // the request reaches outside its subject's limit (another limit's lease, wait or names)
	CodeTooManyWaiters  Code = "too_many_waiters" // the requester's inbox (or the broker) has as many waiters as allowed
	CodeUnavailable     Code = "unavailable"      // the broker is shutting down or cannot persist
	CodeInternal        Code = "internal"         // a broker bug or storage failure
	CodeRevoked         Code = "revoked"          // renew of a lease an operator revoked (recently: later, lease_not_found)
)

// Error is the error object of every reply.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error implements the error interface.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
