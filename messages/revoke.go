package messages

import "unicode/utf8"

// RevokeRequest ends a lease held by someone else (an operator's action):
// the broker drops it like a release and publishes a revoked event.
type RevokeRequest struct {
	LeaseID string `json:"lease_id"`
	// Reason is shown in the revoked event and to the holder (optional).
	Reason string `json:"reason,omitempty"`
	// By describes the revoker, like AcquireRequest.Holder (optional).
	By string `json:"by,omitempty"`
}

// RevokeReply answers a RevokeRequest. Revoked is false when the lease was
// unknown (already released, expired or revoked); that is not an error.
type RevokeReply struct {
	Revoked bool   `json:"revoked"`
	Error   *Error `json:"error,omitempty"`
}

// CheckText checks a free-text field the way CheckHolder checks a holder:
// at most max bytes of valid UTF-8 without control characters.
func CheckText(field, text string, max int) *Error {
	if len(text) > max {
		return Errorf(CodeInvalidArgument, "%s is %d bytes long: the maximum is %d", field, len(text), max)
	}
	for i, r := range text {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return Errorf(CodeInvalidArgument, "%s has %s at byte %d: give printable text", field, describeRune(r), i)
		}
	}
	return nil
}

// RevokedNotice is pushed to the notify subject of a lease's acquisition
// when the lease is revoked, so that its holder stops at once instead of at
// its next renewal (which is answered CodeRevoked all the same). It is a
// message, not a request: nothing answers it.
type RevokedNotice struct {
	// Revoked is the id of the lease revoked; Key echoes the acquisition's
	// grant key, so the client can tell a notice the broker sent.
	Revoked string `json:"revoked"`
	Key     string `json:"key,omitempty"`
	Reason  string `json:"reason,omitempty"`
	By      string `json:"by,omitempty"`
}
