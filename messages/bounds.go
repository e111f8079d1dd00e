package messages

import "time"

// Bounds on what a client may send. The broker refuses anything outside them
// with bad_request, invalid_argument or invalid_occupy before it stores
// anything; PROTOCOL.md §3.2 lists them.
const (
	// MaxRequestBytes is the largest request body the broker decodes.
	MaxRequestBytes = 16 * 1024
	// MaxHolderLen is the longest holder description, in bytes.
	MaxHolderLen = 256
	// MaxReasonLen is the longest revocation reason, in bytes.
	MaxReasonLen = 256
	// MaxNames is the most limits one acquisition may name.
	MaxNames = 16
	// MaxIDLen is the longest wait id or lease id, in bytes.
	MaxIDLen = 64
	// MinKeyLen and MaxKeyLen bound a grant key (AcquireRequest.Key).
	MinKeyLen = 16
	MaxKeyLen = 64
	// MaxSubjectLen is the longest reply or notify subject the broker
	// publishes to, in bytes.
	MaxSubjectLen = 255
	// MaxLimit is the largest number of slots a limit may have; occupy is
	// at most the limit, so it is bounded too.
	MaxLimit = 1_000_000_000
	// MaxDrain bounds how long a full rate limit takes to drain
	// (limit / slot_decay_per_second): every duration the broker computes
	// from a limit's numbers stays far from time.Duration's range.
	MaxDrain = 100 * 365 * 24 * time.Hour
	// MaxTTLMillis is the largest ttl_ms the broker reads before checking
	// it against its configured bounds (100 years): a larger value would
	// overflow a duration.
	MaxTTLMillis = int64(MaxDrain / time.Millisecond)
)
