package client

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

type options struct {
	prefix         string
	log            *slog.Logger
	requestTimeout time.Duration
	retryFor       time.Duration
}

// Option configures a Client.
type Option func(*options) error

// WithPrefix sets the subject prefix the broker serves under (default "slotbroker").
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if e := messages.ValidateName(prefix); e != nil {
			return fmt.Errorf("%w: prefix %q is not one subject token", ErrInvalidArgument, prefix)
		}
		o.prefix = prefix
		return nil
	}
}

// WithLogger sets the logger for warnings (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: logger is nil", ErrInvalidArgument)
		}
		o.log = l
		return nil
	}
}

// WithRequestTimeout bounds one request to the broker (default 5 s); the
// caller's context still applies when its deadline is earlier. A request
// that is retried (acquire, renew, release) waits at most 1 s for its first
// answer, then twice as long at each retry up to this bound, so that one
// lost with a broker that died is sent again soon after a standby takes over.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: request timeout %v", ErrInvalidArgument, d)
		}
		o.requestTimeout = d
		return nil
	}
}

// WithRetryFor sets how long acquire, renew and release requests are retried
// while no broker answers, for example across a broker restart (default
// 30 s). After that they fail with ErrUnavailable.
func WithRetryFor(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: retry window %v", ErrInvalidArgument, d)
		}
		o.retryFor = d
		return nil
	}
}

// acquireOptions are the settings of one acquisition.
type acquireOptions struct {
	strict  bool
	ttl     time.Duration
	holder  string
	names   []string
	timeout time.Duration
	queued  func(position int)
}

// AcquireOption configures one Acquire, TryAcquire, Do or RateLimit call.
type AcquireOption func(*acquireOptions)

// WithStrict turns a missing or inactive limit into an error (ErrNotFound,
// ErrInactive) instead of a warning, and makes Do return ErrLeaseLost when
// the lease is lost while fn runs.
func WithStrict() AcquireOption { return func(o *acquireOptions) { o.strict = true } }

// WithLeaseTTL sets the lease's time to live (default: the broker's, 30 s);
// the broker refuses values outside its bounds (1 s to 24 h by default). It
// is sent in whole milliseconds: a TTL under 1 ms (but not 0, the default)
// is refused locally with ErrInvalidArgument.
func WithLeaseTTL(d time.Duration) AcquireOption { return func(o *acquireOptions) { o.ttl = d } }

// WithHolder describes the holder, as shown by `slotctl inspect`: at most
// messages.MaxHolderLen bytes (a longer one is ErrInvalidArgument).
func WithHolder(desc string) AcquireOption { return func(o *acquireOptions) { o.holder = desc } }

// WithNames adds limits to acquire together with the named one, all or
// nothing. Each limit counts once; with others than the named one the
// request goes to "<prefix>.v1.acquire-many.<name>.<name>..." (the named
// one first) instead of "<prefix>.v1.acquire.<name>", so a NATS user needs
// publish permission on that subject. At most messages.MaxNames limits in
// all (more is ErrInvalidArgument).
func WithNames(names ...string) AcquireOption {
	return func(o *acquireOptions) { o.names = append(o.names, names...) }
}

// WithTimeout bounds the wait; when it passes the call fails with ErrTimeout.
func WithTimeout(d time.Duration) AcquireOption { return func(o *acquireOptions) { o.timeout = d } }

// WithQueued calls fn with the 1-based queue position (on the first limit)
// when the broker queues the request instead of granting it at once; use it
// to tell a user why they wait.
func WithQueued(fn func(position int)) AcquireOption {
	return func(o *acquireOptions) { o.queued = fn }
}
