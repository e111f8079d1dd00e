package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/slotbroker/slotbroker/broker"
)

// parseSettings parses args and the optional config file as the command
// does, without running the daemon, and validates the result.
func parseSettings(t *testing.T, file string, args ...string) (*Config, error) {
	t.Helper()
	var cfg Config
	fs := pflag.NewFlagSet("slotbroker", pflag.ContinueOnError)
	bindFlags(fs, &cfg)
	if file != "" {
		path := filepath.Join(t.TempDir(), "slotbroker.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := loadSettings(fs, &cfg, func(string) string { return "" }); err != nil {
		return nil, err
	}
	return &cfg, cfg.validate()
}

// TestQueueFlagsDefaults: without the new flags the broker's defaults apply
// and no inbox prefix is set.
func TestQueueFlagsDefaults(t *testing.T) {
	cfg, err := parseSettings(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GrantTimeout != broker.DefaultGrantTimeout || cfg.MaxWaitersPerInbox != broker.DefaultMaxWaitersPerInbox ||
		cfg.MaxWaiters != broker.DefaultMaxWaiters || cfg.InboxPrefix != "" {
		t.Errorf("defaults: grant-timeout %v, max-waiters-per-inbox %d, max-waiters %d, inbox-prefix %q; want %v, %d, %d, \"\"",
			cfg.GrantTimeout, cfg.MaxWaitersPerInbox, cfg.MaxWaiters, cfg.InboxPrefix,
			broker.DefaultGrantTimeout, broker.DefaultMaxWaitersPerInbox, broker.DefaultMaxWaiters)
	}
}

// TestQueueFlagsParse: the new settings come from flags and from the config
// file (flags win), and are in the debug summary. That they reach the broker
// is TestDaemonQueueFlagsReachBroker's.
func TestQueueFlagsParse(t *testing.T) {
	check := func(t *testing.T, cfg *Config, grant time.Duration, perInbox, total int, prefix string) {
		t.Helper()
		if cfg.GrantTimeout != grant || cfg.MaxWaitersPerInbox != perInbox || cfg.MaxWaiters != total || cfg.InboxPrefix != prefix {
			t.Errorf("got grant-timeout %v, max-waiters-per-inbox %d, max-waiters %d, inbox-prefix %q; want %v, %d, %d, %q",
				cfg.GrantTimeout, cfg.MaxWaitersPerInbox, cfg.MaxWaiters, cfg.InboxPrefix, grant, perInbox, total, prefix)
		}
	}
	t.Run("Flags", func(t *testing.T) {
		cfg, err := parseSettings(t, "", "--nats", "nats://127.0.0.1:4222", "--grant-timeout", "250ms",
			"--max-waiters-per-inbox", "7", "--max-waiters", "70", "--inbox-prefix", "_INBOX.slotbroker")
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, 250*time.Millisecond, 7, 70, "_INBOX.slotbroker")
		want := "grant-timeout=250ms max-waiters-per-inbox=7 max-waiters=70 inbox-prefix=_INBOX.slotbroker"
		if !strings.Contains(cfg.describe(), want) {
			t.Errorf("describe() = %q, want it to contain %q", cfg.describe(), want)
		}
	})
	t.Run("ConfigFile", func(t *testing.T) {
		cfg, err := parseSettings(t, "nats: nats://127.0.0.1:4222\ngrant-timeout: 10ms\nmax-waiters-per-inbox: 1\nmax-waiters: 1\ninbox-prefix: slotbroker.inbox\n")
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, 10*time.Millisecond, 1, 1, "slotbroker.inbox")
	})
	t.Run("FlagsWinOverFile", func(t *testing.T) {
		cfg, err := parseSettings(t, "grant-timeout: 1m\nmax-waiters: 5\n", "--grant-timeout", "1s", "--max-waiters", "6")
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg, time.Second, broker.DefaultMaxWaitersPerInbox, 6, "")
	})
}

// TestQueueFlagsBadValues: bad values of the new settings exit 78 with one
// line that names the setting and what it accepts, before anything starts.
func TestQueueFlagsBadValues(t *testing.T) {
	t.Setenv(envNATSURL, "")
	dir := t.TempDir()
	file := func(content string) string {
		f, err := os.CreateTemp(dir, "*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(content); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		return f.Name()
	}
	const nats = "nats://127.0.0.1:1"
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"GrantTimeoutShort", []string{"--grant-timeout", "5ms"}, []string{"--grant-timeout 5ms", "give 10ms to 1m"}},
		{"GrantTimeoutLong", []string{"--grant-timeout", "61s"}, []string{"--grant-timeout 1m1s", "give 10ms to 1m"}},
		{"GrantTimeoutZero", []string{"--grant-timeout", "0"}, []string{"--grant-timeout 0s", "give 10ms to 1m"}},
		{"GrantTimeoutNotDuration", []string{"--grant-timeout", "soon"}, []string{`"soon"`, "--grant-timeout"}},
		{"PerInboxZero", []string{"--max-waiters-per-inbox", "0"}, []string{"--max-waiters-per-inbox 0", "give 1 or more"}},
		{"PerInboxNegative", []string{"--max-waiters-per-inbox=-3"}, []string{"--max-waiters-per-inbox -3", "give 1 or more"}},
		{"PerInboxNotNumber", []string{"--max-waiters-per-inbox", "many"}, []string{`"many"`, "--max-waiters-per-inbox"}},
		{"MaxWaitersZero", []string{"--max-waiters", "0"}, []string{"--max-waiters 0", "give 1 or more"}},
		{"MaxLiveKeysZero", []string{"--max-live-keys", "0"}, []string{"--max-live-keys 0", "give 1 or more"}},
		{"PriorityAgingShort", []string{"--priority-aging", "1ms"}, []string{"--priority-aging 1ms", "give 10ms to 24h0m0s"}},
		{"PriorityAgingFile", []string{"--config", file("priority-aging: 48h\n")}, []string{"--priority-aging 48h0m0s", "give 10ms to 24h0m0s"}},
		{"FileGrantTimeout", []string{"--config", file("grant-timeout: 2m\n")}, []string{"--grant-timeout 2m0s", "give 10ms to 1m"}},
		{"FileMaxWaiters", []string{"--config", file("max-waiters: lots\n")}, []string{`key "max-waiters"`, "not a valid int"}},
		{"InboxPrefixEmbedded", []string{"--inbox-prefix", "_INBOX.slotbroker"}, []string{"--inbox-prefix is for an external NATS server", "--nats"}},
		{"InboxPrefixStar", []string{"--nats", nats, "--inbox-prefix", "_INBOX.*"}, []string{`--inbox-prefix "_INBOX.*"`, "wildcards"}},
		{"InboxPrefixGT", []string{"--nats", nats, "--inbox-prefix", "_INBOX.>"}, []string{`--inbox-prefix "_INBOX.>"`, "wildcards"}},
		{"InboxPrefixDot", []string{"--nats", nats, "--inbox-prefix", "_INBOX.slotbroker."}, []string{`--inbox-prefix "_INBOX.slotbroker."`, "must not end with '.'"}},
		{"InboxPrefixEmptyToken", []string{"--nats", nats, "--inbox-prefix", "_INBOX..x"}, []string{`--inbox-prefix "_INBOX..x"`, "empty token"}},
		{"InboxPrefixSpace", []string{"--nats", nats, "--inbox-prefix", "_INBOX. x"}, []string{"--inbox-prefix", "white space"}},
		{"InboxPrefixEmpty", []string{"--nats", nats, "--inbox-prefix", ""}, []string{"--inbox-prefix is empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := execute(tc.args, &stdout, &stderr)
			out := stderr.String()
			if code != exitConfig {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitConfig, out)
			}
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "slotbroker: ") {
				t.Errorf("stderr is not one \"slotbroker: ...\" line:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr %q does not contain %q", out, w)
				}
			}
		})
	}
}

// TestQueueFlagsHelp: --help documents each new flag with its range.
func TestQueueFlagsHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := execute([]string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("--help exit status %d:\n%s", code, stderr.String())
	}
	help := stdout.String()
	for _, w := range []string{
		"--grant-timeout duration", "10ms to 1m", "(default 2s)",
		"--max-waiters-per-inbox int", "(default 10000)",
		"--max-waiters int", "(default 100000)",
		"--inbox-prefix string", "_INBOX.slotbroker",
		"connection lost for good",
	} {
		if !strings.Contains(help, w) {
			t.Errorf("--help does not mention %q:\n%s", w, help)
		}
	}
}
