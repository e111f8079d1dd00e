package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker"
)

// Bounds of the startup and shutdown steps.
const (
	startTimeout = 30 * time.Second
	drainTimeout = 10 * time.Second
)

// daemon is the running pieces, each nil until started.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	srv    *server.Server
	nc     *nats.Conn
	closed chan struct{}
	b      *broker.Broker
}

// run starts the daemon, serves until SIGINT or SIGTERM (or ctx ends), and
// shuts down cleanly.
func run(parent context.Context, cfg *Config, stderr io.Writer) error {
	tuneGC()
	defer startProfile(stderr)()
	level, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stopSignals := watchSignals(parent, log, os.Exit)
	defer stopSignals()

	d := &daemon{cfg: cfg, log: log, closed: make(chan struct{})}
	if err := d.start(ctx); err != nil {
		_ = d.shutdown()
		if ctx.Err() != nil {
			log.Info("stopped during startup")
			return nil
		}
		return err
	}
	fmt.Fprintln(stderr, d.banner())
	<-ctx.Done()
	if err := d.shutdown(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// start brings up NATS (embedded or external), connects and starts the broker.
func (d *daemon) start(ctx context.Context) error {
	opts, err := d.cfg.brokerOptions(d.log)
	if err != nil {
		return err
	}
	d.log.Debug("settings", "summary", d.cfg.describe())
	if d.cfg.external() {
		if err := d.connectExternal(); err != nil {
			return err
		}
	} else {
		if err := d.startEmbedded(); err != nil {
			return err
		}
		// The embedded server knows every subscriber: skip events nobody watches.
		opts = append(opts, broker.WithEventInterest(broker.ServerInterest(d.srv)))
	}
	if d.b, err = broker.New(d.nc, opts...); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return d.b.Start(sctx)
}

func (d *daemon) connectExternal() error {
	opts, err := natsOptions(d.cfg, d.log)
	if err != nil {
		return err
	}
	opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { close(d.closed) }))
	if d.nc, err = nats.Connect(d.cfg.NATS, opts...); err != nil {
		return connectErr(redactURLs(d.cfg.NATS), err)
	}
	d.log.Debug("connected to NATS", "url", d.nc.ConnectedUrlRedacted(), "server", d.nc.ConnectedServerName())
	return nil
}

func (d *daemon) startEmbedded() error {
	srv, err := broker.StartNATS(broker.NATSConfig{
		Listen: d.cfg.Listen, StoreDir: d.cfg.Data, SyncInterval: d.cfg.SyncInterval,
	})
	if err != nil {
		return err
	}
	d.srv = srv
	d.nc, err = nats.Connect(srv.ClientURL(),
		nats.InProcessServer(srv),
		nats.Name("slotbroker"),
		nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { close(d.closed) }),
	)
	if err != nil {
		return unavailableErr("connect to the embedded NATS server: %v", err)
	}
	return nil
}

// banner says where the daemon serves and where its data lives.
func (d *daemon) banner() string {
	if d.srv == nil {
		return fmt.Sprintf("slotbroker %s serving on NATS %s (bucket %q, prefix %q)",
			broker.Version, d.nc.ConnectedUrlRedacted(), d.cfg.Bucket, d.cfg.Prefix)
	}
	data, err := filepath.Abs(d.cfg.Data)
	if err != nil {
		data = d.cfg.Data
	}
	return fmt.Sprintf("slotbroker %s listening on %s (embedded NATS with JetStream), data in %s",
		broker.Version, d.srv.ClientURL(), data)
}

// shutdown stops the broker (no new requests, in-flight ones finished,
// writes flushed), drains the connection and stops the embedded server.
func (d *daemon) shutdown() error {
	var err error
	if d.b != nil {
		err = d.b.Stop()
	}
	if d.nc != nil {
		if e := d.nc.Drain(); e != nil {
			d.nc.Close()
		}
		select {
		case <-d.closed:
		case <-time.After(drainTimeout):
			d.log.Warn("connection did not drain in time; closing it", "timeout", drainTimeout)
			d.nc.Close()
		}
	}
	if d.srv != nil {
		d.srv.Shutdown()
		d.srv.WaitForShutdown()
	}
	return err
}

// redactURLs hides passwords in a comma-separated list of URLs.
func redactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
