package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/messages"
)

// Names of the flags, which are also the keys of the config file.
const (
	flagConfig       = "config"
	flagListen       = "listen"
	flagData         = "data"
	flagSyncInterval = "sync-interval"
	flagSyncAlways   = "sync-always"
	flagNATS         = "nats"
	flagUser         = "user"
	flagPassword     = "password"
	flagCreds        = "creds"
	flagNKey         = "nkey"
	flagTLSCA        = "tlsca"
	flagTLSCert      = "tlscert"
	flagTLSKey       = "tlskey"
	flagBucket       = "bucket"
	flagPrefix       = "prefix"
	flagReplicas     = "replicas"
	flagLeaseTTL     = "lease-ttl"
	flagMaxLeaseTTL  = "max-lease-ttl"
	flagGrantTimeout = "grant-timeout"
	flagLeaderLease  = "leader-lease"
	flagMaxWaitersPI = "max-waiters-per-inbox"
	flagMaxWaiters   = "max-waiters"
	flagAging        = "priority-aging"
	flagMaxLiveKeys  = "max-live-keys"
	flagInboxPrefix  = "inbox-prefix"
	flagLogLevel     = "log-level"
	flagHTTP         = "http"
)

// flagEventRetention names --event-retention (also a config file key).
const flagEventRetention = "event-retention"

// Accepted range of --grant-timeout (the broker's own bounds; the message
// in brokerOptions says them).
const (
	minGrantTimeout = 10 * time.Millisecond
	maxGrantTimeout = time.Minute
)

// Config is the daemon's settings.
type Config struct {
	ConfigFile string

	// Embedded NATS server.
	Listen       string
	Data         string
	SyncInterval time.Duration
	// SyncAlways makes the embedded JetStream fsync every write.
	SyncAlways bool

	// External NATS server and its credentials.
	NATS     string
	User     string
	Password string
	Creds    string
	NKey     string
	TLSCA    string
	TLSCert  string
	TLSKey   string
	// InboxPrefix replaces "_INBOX" in the reply subjects of the broker's
	// own requests (external NATS only), so that NATS permissions can
	// confine them.
	InboxPrefix string

	// Broker.
	Bucket      string
	Prefix      string
	Replicas    int
	LeaseTTL    time.Duration
	MaxLeaseTTL time.Duration
	// GrantTimeout bounds the wait for a waiter's acceptance of a grant.
	GrantTimeout time.Duration
	// LeaderLease is how long after the leader's last renewal a standby
	// broker takes over.
	LeaderLease time.Duration
	// MaxWaitersPerInbox and MaxWaiters bound the queued acquisitions of
	// one client inbox and of the whole broker.
	MaxWaitersPerInbox int
	MaxWaiters         int
	// PriorityAging is the waiting time that raises a queued acquisition's
	// effective priority by one.
	PriorityAging time.Duration
	// MaxLiveKeys bounds the live keys of per-key limits.
	MaxLiveKeys int
	LogLevel    string
	// EventRetention keeps the events in a stream for so long (0: off).
	EventRetention time.Duration

	// HTTP is the address of the metrics and health server (empty: off).
	HTTP string

	// explicit holds the settings given by flag, file or environment.
	explicit map[string]bool
}

func defaultConfig() Config {
	return Config{
		Listen:      "127.0.0.1:4222",
		Data:        "./slotbroker-data",
		Bucket:      messages.DefaultBucket,
		Prefix:      messages.DefaultPrefix,
		Replicas:    1,
		LeaseTTL:    broker.DefaultLeaseTTL,
		MaxLeaseTTL: broker.DefaultMaxLeaseTTL,

		SyncAlways:         true,
		GrantTimeout:       broker.DefaultGrantTimeout,
		LeaderLease:        broker.DefaultLeaderLease,
		MaxWaitersPerInbox: broker.DefaultMaxWaitersPerInbox,
		MaxWaiters:         broker.DefaultMaxWaiters,
		PriorityAging:      broker.DefaultPriorityAging,
		MaxLiveKeys:        broker.DefaultMaxLiveKeys,
		LogLevel:           "info",
	}
}

// external reports whether the daemon uses an external NATS server.
func (c *Config) external() bool { return c.NATS != "" }

// validate checks the settings that do not need files or servers.
func (c *Config) validate() error {
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if err := checkHTTP(c.HTTP); err != nil {
		return err
	}
	if c.external() {
		for _, f := range []string{flagListen, flagData, flagSyncInterval, flagSyncAlways} {
			if c.explicit[f] {
				return configErr("--%s is for the embedded NATS server, but --nats (or $NATS_URL) is set: give one or the other", f)
			}
		}
	} else {
		if err := checkListen(c.Listen); err != nil {
			return err
		}
		if c.Data == "" {
			return configErr("--data is empty: give the data directory")
		}
		if c.SyncInterval < 0 {
			return configErr("--sync-interval %v: give a positive duration, or 0 for the server's default", c.SyncInterval)
		}
		if c.explicit[flagSyncInterval] {
			if c.SyncAlways && c.explicit[flagSyncAlways] {
				return configErr("--sync-always and --sync-interval: give one or the other")
			}
			c.SyncAlways = false // an interval given replaces the default
		}
		for _, f := range []string{flagUser, flagPassword, flagCreds, flagNKey, flagTLSCA, flagTLSCert, flagTLSKey, flagInboxPrefix} {
			if c.explicit[f] {
				return configErr("--%s is for an external NATS server: give --nats URL too, or drop it", f)
			}
		}
		if c.Replicas > 1 {
			return configErr("--replicas %d needs a NATS cluster: give --nats URL, or use 1 with the embedded server", c.Replicas)
		}
	}
	if c.Password != "" && c.User == "" {
		return configErr("--password needs --user")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return configErr("--tlscert and --tlskey go together: give both or neither")
	}
	if c.Creds != "" && (c.NKey != "" || c.User != "") {
		return configErr("--creds cannot be combined with --nkey or --user: give one way to authenticate")
	}
	if c.NKey != "" && c.User != "" {
		return configErr("--nkey cannot be combined with --user: give one way to authenticate")
	}
	if err := checkInboxPrefix(c.InboxPrefix, c.explicit[flagInboxPrefix]); err != nil {
		return err
	}
	if _, err := c.brokerOptions(slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	return nil
}

// checkListen checks a HOST:PORT address.
func checkListen(addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return configErr("--listen %q: use HOST:PORT, e.g. 127.0.0.1:4222", addr)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return configErr("--listen %q: the port must be a number from 0 to 65535", addr)
	}
	return nil
}

// checkInboxPrefix checks --inbox-prefix: NATS subject tokens without
// wildcards, not ending with '.'. Empty means nats.go's "_INBOX", but an
// explicitly empty value is refused: it is most likely a mistake.
func checkInboxPrefix(p string, explicit bool) error {
	if p == "" && !explicit {
		return nil
	}
	const hint = "give subject tokens without wildcards, e.g. _INBOX.slotbroker"
	switch {
	case p == "":
		return configErr("--inbox-prefix is empty: %s, or drop it for the default _INBOX", hint)
	case strings.ContainsAny(p, "*>"):
		return configErr("--inbox-prefix %q: wildcards '*' and '>' are not allowed: %s", p, hint)
	case strings.HasSuffix(p, "."):
		return configErr("--inbox-prefix %q must not end with '.': %s", p, hint)
	case strings.HasPrefix(p, ".") || strings.Contains(p, ".."):
		return configErr("--inbox-prefix %q has an empty token: %s", p, hint)
	case strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return configErr("--inbox-prefix %q contains white space or control characters: %s", p, hint)
	}
	return nil
}

// brokerOptions maps the settings to broker options and checks them.
func (c *Config) brokerOptions(log *slog.Logger) ([]broker.Option, error) {
	if c.LeaseTTL < broker.DefaultMinLeaseTTL || c.LeaseTTL > c.MaxLeaseTTL {
		return nil, configErr("--lease-ttl %v and --max-lease-ttl %v: need %v <= lease-ttl <= max-lease-ttl",
			c.LeaseTTL, c.MaxLeaseTTL, broker.DefaultMinLeaseTTL)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return nil, configErr("--replicas %d: give 1 to 5", c.Replicas)
	}
	if messages.ValidateName(c.Prefix) != nil {
		return nil, configErr("--prefix %q: use letters, digits, '-', '_' or '=' (one subject token)", c.Prefix)
	}
	if messages.ValidateName(c.Bucket) != nil {
		return nil, configErr("--bucket %q: use letters, digits, '-' or '_'", c.Bucket)
	}
	if c.GrantTimeout < minGrantTimeout || c.GrantTimeout > maxGrantTimeout {
		return nil, configErr("--grant-timeout %v: give 10ms to 1m", c.GrantTimeout)
	}
	if c.LeaderLease < 500*time.Millisecond || c.LeaderLease > time.Minute {
		return nil, configErr("--leader-lease %v: give 500ms to 1m", c.LeaderLease)
	}
	if c.MaxWaitersPerInbox < 1 {
		return nil, configErr("--max-waiters-per-inbox %d: give 1 or more", c.MaxWaitersPerInbox)
	}
	if c.MaxWaiters < 1 {
		return nil, configErr("--max-waiters %d: give 1 or more", c.MaxWaiters)
	}
	if c.MaxLiveKeys < 1 {
		return nil, configErr("--max-live-keys %d: give 1 or more", c.MaxLiveKeys)
	}
	if c.PriorityAging < broker.MinPriorityAging || c.PriorityAging > broker.MaxPriorityAging {
		return nil, configErr("--priority-aging %v: give %v to %v", c.PriorityAging, broker.MinPriorityAging, broker.MaxPriorityAging)
	}
	if c.EventRetention != 0 && (c.EventRetention < broker.MinEventRetention || c.EventRetention > broker.MaxEventRetention) {
		return nil, configErr("--event-retention %v: give 0 (off) or 1s to 720h (30 days)", c.EventRetention)
	}
	return []broker.Option{
		broker.WithPrefix(c.Prefix),
		broker.WithBucket(c.Bucket),
		broker.WithReplicas(c.Replicas),
		broker.WithLeaseTTL(c.LeaseTTL, broker.DefaultMinLeaseTTL, c.MaxLeaseTTL),
		broker.WithGrantTimeout(c.GrantTimeout),
		broker.WithLeaderLease(c.LeaderLease),
		broker.WithMaxWaitersPerInbox(c.MaxWaitersPerInbox),
		broker.WithMaxWaiters(c.MaxWaiters),
		broker.WithPriorityAging(c.PriorityAging),
		broker.WithMaxLiveKeys(c.MaxLiveKeys),
		broker.WithEventRetention(c.EventRetention),
		broker.WithLogger(log),
	}, nil
}

// parseLevel parses --log-level.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, configErr("--log-level %q: give debug, info, warn or error", s)
}

// describe is a one-line summary of the settings for the debug log.
func (c *Config) describe() string {
	s := fmt.Sprintf("prefix=%s bucket=%s replicas=%d leader-lease=%v lease-ttl=%v max-lease-ttl=%v grant-timeout=%v max-waiters-per-inbox=%d max-waiters=%d",
		c.Prefix, c.Bucket, c.Replicas, c.LeaderLease, c.LeaseTTL, c.MaxLeaseTTL, c.GrantTimeout, c.MaxWaitersPerInbox, c.MaxWaiters)
	if c.InboxPrefix != "" {
		s += " inbox-prefix=" + c.InboxPrefix
	}
	if c.EventRetention > 0 {
		s += " event-retention=" + c.EventRetention.String()
	}
	return s
}
