package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestEventRetentionSetting: --event-retention (also a config file key) is
// off by default, checked against the broker's bounds and in the summary.
func TestEventRetentionSetting(t *testing.T) {
	cfg, err := parseSettings(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EventRetention != 0 || strings.Contains(cfg.describe(), "event-retention") {
		t.Errorf("default: retention %v, summary %q; want off", cfg.EventRetention, cfg.describe())
	}
	cfg, err = parseSettings(t, "", "--event-retention", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EventRetention != time.Hour || !strings.Contains(cfg.describe(), "event-retention=1h0m0s") {
		t.Errorf("flag: retention %v, summary %q", cfg.EventRetention, cfg.describe())
	}
	cfg, err = parseSettings(t, "event-retention: 10m\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EventRetention != 10*time.Minute {
		t.Errorf("config file: retention %v, want 10m", cfg.EventRetention)
	}
	for _, bad := range []string{"500ms", "-1m", "721h"} {
		_, err := parseSettings(t, "", "--event-retention", bad)
		if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), "--event-retention") {
			t.Errorf("--event-retention %s: %v, want a configuration error naming it", bad, err)
		}
	}
}

// TestDaemonEventRetention: with --event-retention the embedded daemon
// creates the events stream and publishes events nobody subscribes to, for
// the stream to keep them.
func TestDaemonEventRetention(t *testing.T) {
	cfg := testConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	cfg.EventRetention = time.Hour
	r := startDaemon(t, cfg)
	d := r.serving(t)
	nc := connect(t, d.srv.ClientURL(), false)
	waitAnswers(t, nc, cfg.Prefix)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.CreateLimit(ctx, "kept", 1); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, broker.EventStream(cfg.Bucket), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(testBound))
	if err != nil {
		t.Fatalf("no event kept: %v", err)
	}
	if want := messages.NewSubjects(cfg.Prefix).Event("kept", messages.EventCreated); m.Subject() != want {
		t.Errorf("kept event on %s, want %s", m.Subject(), want)
	}
}
