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
	// key and keyed: WithKey; priority: WithPriority.
	key      string
	keyed    bool
	priority int
	queued   func(Queued)
	updates  func(Queued) // WithQueueUpdates
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

// WithKey acquires the limit of key in the per-key limit named (one
// created with PerKey): each key has the family's number of slots to itself,
// created on first use and dropped when idle. The requests go to
// "<prefix>.v1.<verb>.<name>.<key>", so NATS permissions can confine a user
// to one key. A key is 1 to messages.MaxNameLen letters, digits, '-', '_'
// or '=' (else ErrInvalidName); it cannot be combined with WithNames.
func WithKey(key string) AcquireOption {
	return func(o *acquireOptions) { o.key, o.keyed = key, true }
}

// WithPriority queues the acquisition at priority p, 0 (the default,
// lowest) to messages.MaxPriority: a waiter of higher priority is granted
// first, FIFO among equals. A waiter's effective priority rises by one per
// aging interval waited (the broker's --priority-aging, 10 s by default),
// so higher priorities cannot starve it (PROTOCOL.md §7.5). A priority out
// of range is ErrInvalidArgument.
func WithPriority(p int) AcquireOption { return func(o *acquireOptions) { o.priority = p } }

// WithTimeout bounds the wait; when it passes the call fails with ErrTimeout.
func WithTimeout(d time.Duration) AcquireOption { return func(o *acquireOptions) { o.timeout = d } }

// WithQueued calls fn once, when the broker queues the request instead of
// granting it at once, with its 1-based queue position (on the first limit)
// and the broker's estimate of the wait (Queued); use it to tell a user why
// and how long they wait. WithQueueUpdates tells every later answer too.
func WithQueued(fn func(Queued)) AcquireOption {
	return func(o *acquireOptions) { o.queued = fn }
}

// Queued is where a queued acquisition stands, as the broker last answered
// (WithQueued, WithQueueUpdates).
type Queued struct {
	// Position is the 1-based place in the queue of the first limit.
	Position int
	// Estimate is the broker's estimate of the wait left when it answered
	// (At), meaningful only when EstimateKnown: the wait should end about
	// At.Add(Estimate).
	Estimate      time.Duration
	EstimateKnown bool
	// Exact is set when Estimate is a rate limit's arithmetic: it holds
	// unless the limit is changed or acquisitions of higher priority queue
	// ahead. Otherwise the estimate rests on the Samples most recent hold
	// times of the limit (PROTOCOL.md §7.6).
	Exact   bool
	Samples int
	// At is when the answer arrived, by the local clock.
	At time.Time
}

// WithQueueUpdates calls fn each time the broker answers that the
// acquisition waits: when it first queues it, and at each of the client's
// re-sends of the waiting acquisition (every 30 s, and after each
// reconnection). fn gets the queue position and the broker's estimate of
// the wait, which it has once holds of the limit have ended (on a rate
// limit, at once). fn runs on the acquiring goroutine: it must not block.
func WithQueueUpdates(fn func(Queued)) AcquireOption {
	return func(o *acquireOptions) { o.updates = fn }
}

// tellQueued passes a queued answer to the callbacks: WithQueued's for
// the first one only.
func (o *acquireOptions) tellQueued(reply *messages.AcquireReply, first bool) {
	if (!first || o.queued == nil) && o.updates == nil {
		return
	}
	q := Queued{Position: reply.Position, At: time.Now()}
	if e := reply.Estimate; e != nil {
		q.Estimate, q.EstimateKnown = time.Duration(e.Millis)*time.Millisecond, true
		q.Exact, q.Samples = e.Basis == messages.EstimateRate, e.Samples
	}
	if first && o.queued != nil {
		o.queued(q)
	}
	if o.updates != nil {
		o.updates(q)
	}
}
