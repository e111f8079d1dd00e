package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slotbroker/slotbroker/messages"
)

// Defaults of the options.
const (
	DefaultLeaseTTL     = 30 * time.Second
	DefaultMinLeaseTTL  = time.Second
	DefaultMaxLeaseTTL  = 24 * time.Hour
	DefaultGrantTimeout = 2 * time.Second
	// DefaultMaxWaitersPerInbox bounds the queued acquisitions of one
	// inbox (one Go Client, usually one connection).
	DefaultMaxWaitersPerInbox = 10_000
	// DefaultMaxWaiters bounds the queued acquisitions of the whole broker
	// (about 1 KB of memory each).
	DefaultMaxWaiters = 100_000
	// DefaultNotifyRoot is the subject root grants are pushed under:
	// nats.go's inbox prefix, under which custom per-user prefixes go too.
	DefaultNotifyRoot = "_INBOX"
	// DefaultReconnectGrace covers a client's reconnection to a restarted
	// server (nats.go waits 2 s between attempts by default).
	DefaultReconnectGrace = 10 * time.Second
	// DefaultLeaderLease is the leader lease (leadership.go): a standby
	// takes over this long after it last saw the leader renew it. Renewed
	// every quarter of it, it survives three lost renewals; short enough
	// that a killed leader is replaced within 2 s.
	DefaultLeaderLease = 1500 * time.Millisecond
)

type options struct {
	prefix       string
	bucket       string
	replicas     int
	ttl          ttlBounds
	grantTimeout time.Duration
	// reconnectGrace: after Start, a grant that finds no responder is retried this long.
	reconnectGrace time.Duration
	log            *slog.Logger
	memory         bool
	// snapshotEntries and snapshotInterval: a snapshot after so many
	// appends, or after so long when anything was appended (snapshot.go).
	snapshotEntries  int
	snapshotInterval time.Duration
	// notifyRoots are the subject roots grants may be pushed under.
	notifyRoots []string
	// maxWaitersPerInbox and maxWaiters bound the queue (waiters.go).
	maxWaitersPerInbox int
	maxWaiters         int
	// maxLiveKeys bounds the live keys of per-key limits (perkey.go).
	maxLiveKeys int
	// priorityAging is the waiting time per step of effective priority (queue.go).
	priorityAging time.Duration
	// interest, when set, tells whether an event subject has subscribers.
	interest func(subject string) bool
	// leaderLease is the leader lease's length (leadership.go).
	leaderLease time.Duration
	// predecessor is the id of a stopped broker of this process whose
	// lease record counts as released.
	predecessor string
	// metrics, when set, gets the broker's collector (metrics.go);
	// metricsLimitCap bounds the limits with series of their own.
	metrics         prometheus.Registerer
	metricsLimitCap int
	// eventRetention, when above 0, keeps the events in a stream
	// (events.go) for so long.
	eventRetention time.Duration
}

func defaultOptions() options {
	return options{
		prefix:       messages.DefaultPrefix,
		bucket:       messages.DefaultBucket,
		replicas:     1,
		ttl:          ttlBounds{def: DefaultLeaseTTL, min: DefaultMinLeaseTTL, max: DefaultMaxLeaseTTL},
		grantTimeout: DefaultGrantTimeout, reconnectGrace: DefaultReconnectGrace,
		maxWaitersPerInbox: DefaultMaxWaitersPerInbox, maxWaiters: DefaultMaxWaiters,
		priorityAging:   DefaultPriorityAging,
		maxLiveKeys:     DefaultMaxLiveKeys,
		snapshotEntries: DefaultSnapshotEntries, snapshotInterval: DefaultSnapshotInterval,
		notifyRoots: []string{DefaultNotifyRoot},
		log:         slog.New(slog.DiscardHandler),
		leaderLease: DefaultLeaderLease, metricsLimitCap: DefaultMetricsLimitCap,
	}
}

// Option configures a Broker. Options check their argument and New reports
// the first bad one wrapped in ErrConfig.
type Option func(*options) error

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// WithPrefix sets the first token of every subject (default "slotbroker").
func WithPrefix(prefix string) Option {
	return func(o *options) error {
		if e := messages.ValidateName(prefix); e != nil {
			return configErr("prefix %q: use letters, digits, '-', '_' or '=' (one subject token)", prefix)
		}
		o.prefix = prefix
		return nil
	}
}

// WithBucket sets the JetStream key-value bucket (default "slotbroker").
func WithBucket(bucket string) Option {
	return func(o *options) error {
		if e := messages.ValidateName(bucket); e != nil {
			return configErr("bucket %q: use letters, digits, '-' or '_'", bucket)
		}
		o.bucket = bucket
		return nil
	}
}

// WithReplicas sets the bucket's replica count on a clustered JetStream (1 to 5).
func WithReplicas(n int) Option {
	return func(o *options) error {
		if n < 1 || n > 5 {
			return configErr("replicas %d: give 1 to 5", n)
		}
		o.replicas = n
		return nil
	}
}

// WithLeaseTTL sets the default lease TTL and the bounds a caller may ask for.
func WithLeaseTTL(def, min, max time.Duration) Option {
	return func(o *options) error {
		if min < time.Second || min > def || def > max {
			return configErr("lease ttl bounds min=%v default=%v max=%v: need 1s <= min <= default <= max", min, def, max)
		}
		o.ttl = ttlBounds{def: def, min: min, max: max}
		return nil
	}
}

// WithGrantTimeout bounds how long a pushed grant waits for the waiter's
// acceptance before the slots go to the next waiter (default 2 s).
func WithGrantTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 10*time.Millisecond || d > time.Minute {
			return configErr("grant timeout %v: give 10ms to 1m", d)
		}
		o.grantTimeout = d
		return nil
	}
}

// WithMaxWaitersPerInbox bounds how many acquisitions one inbox (the notify
// subject without its last token: one Go Client) may have queued at once
// (default 10,000). One more is refused with too_many_waiters.
func WithMaxWaitersPerInbox(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return configErr("max waiters per inbox %d: give at least 1", n)
		}
		o.maxWaitersPerInbox = n
		return nil
	}
}

// WithNotifyRoots sets the subject roots under which a queued acquisition's
// notify subject must lie (default "_INBOX"): the subjects the broker's NATS
// user may publish grants to. A notify elsewhere is refused at once instead
// of costing a grant timeout when the server drops the grant.
func WithNotifyRoots(roots ...string) Option {
	return func(o *options) error {
		if len(roots) == 0 {
			return configErr("notify roots: give at least one")
		}
		for _, r := range roots {
			if r == "" || strings.ContainsAny(r, "*> \t") || strings.HasPrefix(r, "$") || strings.HasSuffix(r, ".") || strings.HasPrefix(r, ".") {
				return configErr("notify root %q: give a literal subject prefix such as _INBOX", r)
			}
		}
		o.notifyRoots = append([]string(nil), roots...)
		return nil
	}
}

// underRoot tells whether subject lies under one of roots.
func underRoot(subject string, roots []string) bool {
	for _, r := range roots {
		if strings.HasPrefix(subject, r+".") {
			return true
		}
	}
	return false
}

// WithMaxWaiters bounds how many acquisitions the broker keeps queued in
// all (default 100,000), whatever inboxes they come from.
func WithMaxWaiters(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return configErr("max waiters %d: give at least 1", n)
		}
		o.maxWaiters = n
		return nil
	}
}

// DefaultMaxLiveKeys bounds the live keys of all per-key limits together
// (a live key costs a few hundred bytes: BENCHMARKS.md).
const DefaultMaxLiveKeys = 1_000_000

// WithMaxLiveKeys bounds how many keys of per-key limits may be live at
// once, all families together (default DefaultMaxLiveKeys): the first use
// of one more key is refused with too_many_waiters until some are idle.
func WithMaxLiveKeys(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return configErr("max live keys %d: give at least 1", n)
		}
		o.maxLiveKeys = n
		return nil
	}
}

// Bounds of WithPriorityAging.
const (
	MinPriorityAging = 10 * time.Millisecond
	MaxPriorityAging = 24 * time.Hour
)

// WithPriorityAging sets how long a queued acquisition waits for its
// effective priority to rise by one (default DefaultPriorityAging): one of
// priority p is served before any acquisition queued after it once it has
// waited (MaxPriority-p) times d, so no stream of higher priorities starves
// it for longer (PROTOCOL.md §7.4).
func WithPriorityAging(d time.Duration) Option {
	return func(o *options) error {
		if d < MinPriorityAging || d > MaxPriorityAging {
			return configErr("priority aging %v: give %v to %v", d, MinPriorityAging, MaxPriorityAging)
		}
		o.priorityAging = d
		return nil
	}
}

// WithSnapshotEvery sets how often the broker writes a snapshot of its
// state: after entries journal appends, or after interval when anything was
// appended (defaults 10,000 and 1 minute). Recovery replays the journal
// after the newest snapshot, and the journal is kept only back to the
// snapshot before it.
func WithSnapshotEvery(entries int, interval time.Duration) Option {
	return func(o *options) error {
		if entries < 1 || interval < 100*time.Millisecond {
			return configErr("snapshot every %d entries or %v: give at least 1 entry and 100ms", entries, interval)
		}
		o.snapshotEntries, o.snapshotInterval = entries, interval
		return nil
	}
}

// WithReconnectGrace sets how long after Start a grant to a waiter queued
// before the restart that finds no responder is retried instead of passed on
// (default 10 s): waiters whose connections are still reconnecting to a
// restarted server keep their turn. 0 passes such grants on at once.
func WithReconnectGrace(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return configErr("reconnect grace %v: give 0 or a positive duration", d)
		}
		o.reconnectGrace = d
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return configErr("logger is nil")
		}
		o.log = l
		return nil
	}
}

// WithMemoryStorage keeps the bucket in memory instead of on disk (for tests
// and benchmarks that want no durability).
func WithMemoryStorage() Option {
	return func(o *options) error {
		o.memory = true
		return nil
	}
}

// WithEventInterest gives the broker a way to ask whether anyone subscribes
// to an event's subject; it then skips encoding and publishing events nobody
// would receive. Without it every event is published. For a server in this
// process use ServerInterest; a server with accounts or a cluster of
// servers may not know every subscriber, so leave it unset there.
func WithEventInterest(fn func(subject string) bool) Option {
	return func(o *options) error {
		if fn == nil {
			return configErr("event interest function is nil")
		}
		o.interest = fn
		return nil
	}
}

// WithLeaderLease sets the leader lease (default DefaultLeaderLease, 500 ms
// to 1 min): how long after a leader's last renewal a standby takes over.
// Every broker on a bucket should use the same; the leader record carries
// the leader's own, which standbys honour.
func WithLeaderLease(d time.Duration) Option {
	return func(o *options) error {
		if d < 500*time.Millisecond || d > time.Minute {
			return configErr("leader lease %v: give 500ms to 1m", d)
		}
		o.leaderLease = d
		return nil
	}
}

// WithPredecessor names a broker of this process that has stopped (its Stop
// returned): a leader record of it counts as released, so that this broker
// takes over without waiting for that lease to lapse. A daemon that stands
// by again after losing the leadership passes its previous broker's ID.
// Never name a broker that may still serve.
func WithPredecessor(id string) Option {
	return func(o *options) error {
		o.predecessor = id
		return nil
	}
}

// WithMetrics registers the broker's Prometheus metrics on reg (metrics.go
// lists them): New registers its collector, Stop unregisters it, so that a
// broker started after the previous one stopped can use the same registry.
// Two brokers serving at once need two registries (or
// prometheus.WrapRegistererWith). Without it (or with nil) there are no
// metrics and no work for them.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(o *options) error {
		o.metrics = reg
		return nil
	}
}

// WithMetricsLimitCap bounds the limits with metric series of their own
// (default DefaultMetricsLimitCap, 100): at each scrape the first n limits
// by name get their own series, and every other limit (and every deleted
// one) is summed under limit="_other". n may be 0: everything is _other.
func WithMetricsLimitCap(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return configErr("metrics limit cap %d: give 0 or more", n)
		}
		o.metricsLimitCap = n
		return nil
	}
}

// Bounds of WithEventRetention.
const (
	MinEventRetention = time.Second
	MaxEventRetention = 30 * 24 * time.Hour
)

// WithEventRetention keeps the events for d in a JetStream stream,
// SLOTBROKER_EVENTS_<bucket>, capturing "<prefix>.v1.events.>" (file
// storage, or memory with WithMemoryStorage; the bucket's replicas), which
// Start creates or updates: a watcher can then replay the recent past
// (slotctl watch --since). 0, the default, keeps none; otherwise give 1s to
// 30 days. With it the broker publishes every event, whatever
// WithEventInterest says, for the stream to capture it.
func WithEventRetention(d time.Duration) Option {
	return func(o *options) error {
		if d != 0 && (d < MinEventRetention || d > MaxEventRetention) {
			return configErr("event retention %v: give 0 (off) or 1s to 720h (30 days)", d)
		}
		o.eventRetention = d
		return nil
	}
}
