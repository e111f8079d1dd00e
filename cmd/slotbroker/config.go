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
	flagLogLevel     = "log-level"
)

// Config is the daemon's settings.
type Config struct {
	ConfigFile string

	// Embedded NATS server.
	Listen       string
	Data         string
	SyncInterval time.Duration

	// External NATS server and its credentials.
	NATS     string
	User     string
	Password string
	Creds    string
	NKey     string
	TLSCA    string
	TLSCert  string
	TLSKey   string

	// Broker.
	Bucket      string
	Prefix      string
	Replicas    int
	LeaseTTL    time.Duration
	MaxLeaseTTL time.Duration
	LogLevel    string

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
		LogLevel:    "info",
	}
}

// external reports whether the daemon uses an external NATS server.
func (c *Config) external() bool { return c.NATS != "" }

// validate checks the settings that do not need files or servers.
func (c *Config) validate() error {
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.external() {
		for _, f := range []string{flagListen, flagData, flagSyncInterval} {
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
		for _, f := range []string{flagUser, flagPassword, flagCreds, flagNKey, flagTLSCA, flagTLSCert, flagTLSKey} {
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
	return []broker.Option{
		broker.WithPrefix(c.Prefix),
		broker.WithBucket(c.Bucket),
		broker.WithReplicas(c.Replicas),
		broker.WithLeaseTTL(c.LeaseTTL, broker.DefaultMinLeaseTTL, c.MaxLeaseTTL),
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
	return fmt.Sprintf("prefix=%s bucket=%s replicas=%d lease-ttl=%v max-lease-ttl=%v",
		c.Prefix, c.Bucket, c.Replicas, c.LeaseTTL, c.MaxLeaseTTL)
}
