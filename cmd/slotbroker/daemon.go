package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// drainTimeout bounds the drain of the connection at shutdown. Startup has
// no bound: a broker waits for JetStream and for the leadership as long as
// it runs, saying what it waits for.
const drainTimeout = 10 * time.Second

// daemon is the running pieces, each nil until started.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	srv    *server.Server
	nc     *nats.Conn
	closed chan struct{}
	b      *broker.Broker
	// opts are the options of every broker the daemon starts.
	opts []broker.Option
	// cur is b for the HTTP handlers; reg, httpMux, http and httpDone are
	// the --http server's (httpserver.go).
	cur      atomic.Pointer[broker.Broker]
	reg      *prometheus.Registry
	httpMux  *http.ServeMux
	http     *http.Server
	httpDone chan struct{}
	// httpEnd ends the HTTP requests that stream (the live view's events)
	// at shutdown; viewClient lists limits for the live view (webview.go).
	httpEnd    context.CancelFunc
	viewMu     sync.Mutex
	viewClient *client.Client
}

// servingHook, when set (by tests only), is called with the daemon once it
// serves, before run waits.
var servingHook func(d *daemon)

// run starts the daemon, serves until SIGINT or SIGTERM (or ctx ends), and
// shuts down cleanly. When the service ends without a signal (the NATS
// connection closed for good, or the broker can no longer serve) it shuts
// down and returns an unavailable error (exit 69) saying why: a daemon
// never lingers without serving.
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
	if servingHook != nil {
		servingHook(d)
	}
	lost := d.wait(ctx)
	for lost != nil && d.deposed() {
		// Another broker leads now: stand by again on the same connection.
		log.Warn("lost the leadership; standing by", "err", d.b.Err())
		if err := d.b.Stop(); err != nil {
			log.Debug("stop after losing the leadership", "err", err)
		}
		if err := d.startBroker(ctx); err != nil {
			if ctx.Err() != nil {
				_ = d.shutdown()
				log.Info("stopped while standing by")
				return nil
			}
			if d.nc.IsClosed() {
				// The leadership was lost with the connection: say that.
				err = d.lostErr()
			}
			_ = d.shutdown()
			return err
		}
		fmt.Fprintln(stderr, d.banner())
		lost = d.wait(ctx)
	}
	if lost != nil {
		// The shutdown's errors (unflushed writes, a failed drain) follow
		// from the loss: what the operator needs is the loss itself.
		if err := d.shutdown(); err != nil {
			log.Debug("shutdown after the service ended", "err", err)
		}
		return lost
	}
	if err := d.shutdown(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// restartHint ends the message of a service that ended without a signal.
const restartHint = "exiting so that a supervisor restarts it"

// wait blocks until a signal (or the end of ctx), which returns nil, or until
// the service ends by itself: the connection closed for good or the broker
// can no longer serve, which returns the error to exit with.
func (d *daemon) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-d.closed:
	case <-d.b.Done():
	}
	if ctx.Err() != nil {
		return nil // a signal came with the loss: a requested stop
	}
	return d.lostErr()
}

// lostErr says, in one line, why the service ended and what to check.
func (d *daemon) lostErr() error {
	where := ""
	if d.cfg.external() {
		where = redactURLs(d.cfg.NATS)
	}
	if d.nc.IsClosed() {
		cause := nats.ErrConnectionClosed.Error()
		last := d.nc.LastError()
		if last != nil {
			cause = last.Error()
		}
		if where == "" {
			return unavailableErr("lost the connection to the embedded NATS server (%s): %s", cause, restartHint)
		}
		if authError(last) {
			return unavailableErr("lost the NATS connection (%s): %s; check the broker's credentials (--user/--password, --creds or --nkey) on NATS at %s",
				cause, restartHint, where)
		}
		return unavailableErr("lost the NATS connection (%s): %s; check NATS at %s", cause, restartHint, where)
	}
	cause := "its service ended"
	if err := d.b.Err(); err != nil {
		cause = err.Error()
	}
	if where == "" {
		return unavailableErr("the broker stopped serving (%s): %s", cause, restartHint)
	}
	return unavailableErr("the broker stopped serving (%s): %s; check the broker's permissions on NATS at %s", cause, restartHint, where)
}

// start brings up NATS (embedded or external), connects and starts the broker.
func (d *daemon) start(ctx context.Context) error {
	opts, err := d.cfg.brokerOptions(d.log)
	if err != nil {
		return err
	}
	d.log.Debug("settings", "summary", d.cfg.describe())
	if err := d.startHTTP(); err != nil {
		return err
	}
	if d.reg != nil {
		opts = append(opts, broker.WithMetrics(d.reg))
	}
	if d.cfg.external() {
		if err := d.connectExternal(); err != nil {
			return err
		}
	} else {
		if err := d.startEmbedded(); err != nil {
			return err
		}
		// The embedded server knows every subscriber: skip events nobody
		// watches, unless the events stream keeps them all.
		if d.cfg.EventRetention == 0 {
			opts = append(opts, broker.WithEventInterest(broker.ServerInterest(d.srv)))
		}
	}
	d.opts = opts
	return d.startBroker(ctx)
}

// startBroker starts a broker on the connection. It waits, as long as ctx
// lasts, for JetStream and for the leadership of the bucket (standing by
// while another broker leads).
func (d *daemon) startBroker(ctx context.Context) error {
	for {
		opts := d.opts
		if d.b != nil {
			// The previous broker has stopped: its lease need not lapse.
			opts = append(opts[:len(opts):len(opts)], broker.WithPredecessor(d.b.ID()))
		}
		var err error
		if d.b, err = broker.New(d.nc, opts...); err != nil {
			return err
		}
		d.cur.Store(d.b)
		err = d.b.Start(ctx)
		if err == nil || ctx.Err() != nil || d.nc.IsClosed() ||
			!errors.Is(err, broker.ErrLostLeadership) && !errors.Is(err, broker.ErrDeposed) {
			return err
		}
		// The lease lapsed (or another broker claimed the journal) while
		// this one took over: stand by again.
		d.log.Warn("lost the leadership while taking over; standing by", "err", err)
		_ = d.b.Stop()
	}
}

// deposed tells whether the broker stopped serving because another broker
// leads now, its connection intact: the daemon stands by again.
func (d *daemon) deposed() bool {
	err := d.b.Err()
	return !d.nc.IsClosed() && (errors.Is(err, broker.ErrLostLeadership) || errors.Is(err, broker.ErrDeposed))
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
		Listen: d.cfg.Listen, StoreDir: d.cfg.Data, SyncInterval: d.cfg.SyncInterval, SyncAlways: d.cfg.SyncAlways,
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
	d.stopHTTP() // the live view's client goes before the connection
	d.viewMu.Lock()
	if d.viewClient != nil {
		_ = d.viewClient.Close()
		d.viewClient = nil
	}
	d.viewMu.Unlock()
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
