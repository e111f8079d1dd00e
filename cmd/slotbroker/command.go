package main

import (
	"errors"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/slotbroker/slotbroker/broker"
)

const longHelp = `slotbroker brokers distributed concurrency limits and rate limits over NATS.

With no flags it starts an embedded NATS server with JetStream on
127.0.0.1:4222 and keeps its state in ./slotbroker-data. With --nats (or
$NATS_URL) it serves on an existing NATS server or cluster instead.

Settings come from flags, then from the --config YAML file (keys are the flag
names, e.g. "lease-ttl: 1m"), then from $NATS_URL for --nats, then defaults.

SIGINT or SIGTERM stops taking requests, finishes the ones in flight, flushes
the state and exits 0; a second signal exits at once with status 130.

The daemon never lingers without serving: when its NATS connection closes for
good (nats.go reconnects forever, so only a fatal error such as refused
credentials closes it) or the broker's service ends, it says why on stderr and
exits 69, for a supervisor (systemd, Kubernetes) to restart it.

Exit statuses: 0 clean stop, 64 usage error, 69 server unavailable (port in
use, NATS unreachable, JetStream not enabled, service not registered, NATS
connection lost for good), 78 bad configuration (values, config file, TLS
files, data directory), 1 other failures.`

// execute parses args, runs the daemon and returns the exit status.
func execute(args []string, stdout, stderr io.Writer) int {
	var cfg Config
	cmd := newCommand(&cfg, stderr)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err != nil {
		reportError(stderr, err)
	}
	return exitStatus(err)
}

// newCommand builds the command; its flags fill cfg.
func newCommand(cfg *Config, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:           "slotbroker [flags]",
		Short:         "Distributed concurrency and rate limits over NATS",
		Long:          longHelp,
		Version:       broker.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unexpected argument %q: slotbroker takes only flags (see --help)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadSettings(cmd.Flags(), cfg, os.Getenv); err != nil {
				return err
			}
			if err := cfg.validate(); err != nil {
				return err
			}
			return run(cmd.Context(), cfg, stderr)
		},
	}
	cmd.SetVersionTemplate("slotbroker {{.Version}}\n")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		var bad *pflag.InvalidValueError
		if errors.As(err, &bad) {
			return configErr("%v", err)
		}
		return usageErr("%v (see --help)", err)
	})
	bindFlags(cmd.Flags(), cfg)
	return cmd
}

// bindFlags defines the flags, with their defaults, on cfg's fields.
func bindFlags(fs *pflag.FlagSet, cfg *Config) {
	d := defaultConfig()
	fs.SortFlags = false
	fs.StringVar(&cfg.ConfigFile, flagConfig, "", "YAML file with settings (keys are the flag names); flags win over it")
	fs.StringVar(&cfg.Listen, flagListen, d.Listen, "client address of the embedded NATS server, HOST:PORT")
	fs.StringVar(&cfg.Data, flagData, d.Data, "data directory of the embedded NATS server's JetStream store")
	fs.DurationVar(&cfg.SyncInterval, flagSyncInterval, d.SyncInterval, "how often the embedded JetStream fsyncs (0: the server's default, 2m); see --sync-always")
	fs.BoolVar(&cfg.SyncAlways, flagSyncAlways, d.SyncAlways, "fsync every journal append before it is acknowledged (the default): a power loss loses no answered change, at one fsync per group commit; --sync-interval trades that for latency")
	fs.StringVar(&cfg.NATS, flagNATS, d.NATS, "URL(s) of an external NATS server or cluster to use instead of the embedded one (default $NATS_URL)")
	fs.StringVar(&cfg.User, flagUser, "", "NATS user name (with --nats)")
	fs.StringVar(&cfg.Password, flagPassword, "", "NATS password (with --user)")
	fs.StringVar(&cfg.Creds, flagCreds, "", "NATS credentials file (JWT and nkey seed)")
	fs.StringVar(&cfg.NKey, flagNKey, "", "NATS nkey seed file")
	fs.StringVar(&cfg.TLSCA, flagTLSCA, "", "CA certificates (PEM) to verify the NATS server")
	fs.StringVar(&cfg.TLSCert, flagTLSCert, "", "client certificate (PEM) for NATS, with --tlskey")
	fs.StringVar(&cfg.TLSKey, flagTLSKey, "", "client private key (PEM) for NATS, with --tlscert")
	fs.StringVar(&cfg.InboxPrefix, flagInboxPrefix, "", "prefix of the broker's own inboxes instead of _INBOX, for NATS permissions to confine them, e.g. _INBOX.slotbroker; no request whose reply subject is under it is answered (with --nats; no '*', '>' or trailing '.')")
	fs.StringVar(&cfg.Bucket, flagBucket, d.Bucket, "JetStream key-value bucket holding the state")
	fs.StringVar(&cfg.Prefix, flagPrefix, d.Prefix, "first token of every subject the broker serves")
	fs.IntVar(&cfg.Replicas, flagReplicas, d.Replicas, "replicas of the bucket on a clustered JetStream (1 to 5)")
	fs.DurationVar(&cfg.LeaseTTL, flagLeaseTTL, d.LeaseTTL, "lease time to live when the client asks for none")
	fs.DurationVar(&cfg.MaxLeaseTTL, flagMaxLeaseTTL, d.MaxLeaseTTL, "longest lease time to live a client may ask for")
	fs.DurationVar(&cfg.LeaderLease, flagLeaderLease, d.LeaderLease, "with several brokers on one bucket: how long after the leader's last renewal of its lease a standby takes over (500ms to 1m; the same on every broker)")
	fs.DurationVar(&cfg.GrantTimeout, flagGrantTimeout, d.GrantTimeout, "how long a grant pushed to a queued waiter waits for its acceptance before the slots go to the next waiter (10ms to 1m)")
	fs.IntVar(&cfg.MaxWaitersPerInbox, flagMaxWaitersPI, d.MaxWaitersPerInbox, "most acquisitions one client inbox (one Go Client) may have queued at once; more are refused with too_many_waiters (1 or more)")
	fs.IntVar(&cfg.MaxLiveKeys, flagMaxLiveKeys, d.MaxLiveKeys, "most keys of per-key limits live at once (holding or waiting), all limits together; the first use of one more is refused with too_many_waiters (1 or more)")
	fs.DurationVar(&cfg.PriorityAging, flagAging, d.PriorityAging, "waiting time that raises a queued acquisition's effective priority by one, so that higher priorities cannot starve it (10ms to 24h)")
	fs.IntVar(&cfg.MaxWaiters, flagMaxWaiters, d.MaxWaiters, "most acquisitions queued in the whole broker, about 1 KB of memory each; more are refused with too_many_waiters (1 or more)")
	fs.DurationVar(&cfg.EventRetention, flagEventRetention, d.EventRetention, "keep the events for this long in the JetStream stream SLOTBROKER_EVENTS_<bucket>, for slotctl watch --since to replay them (1s to 720h; 0, the default: keep none)")
	fs.StringVar(&cfg.LogLevel, flagLogLevel, d.LogLevel, "log level on stderr: debug, info, warn or error")
	fs.StringVar(&cfg.HTTP, flagHTTP, "", "serve /metrics (Prometheus), /healthz and /readyz over HTTP on HOST:PORT, e.g. 127.0.0.1:8288 (default off)")
}
