package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/cmd/slotbroker/webview"
	"github.com/slotbroker/slotbroker/messages"
)

// The daemon's HTTP server (--http ADDR, off by default) serves:
//
//	/         the live view (webview): every limit, its holders and
//	          waiters, updated live (/events, /api/limits); it lists the
//	          limits over NATS, so a standby's page shows them too
//	/metrics  Prometheus metrics: the Go and process collectors and the
//	          current broker's (broker/metrics.go lists them)
//	/healthz  200 "ok" while the process runs
//	/readyz   200 while the broker leads and serves, or stands by with the
//	          journal read to within 1000 entries; 503 with a one-line
//	          reason otherwise (starting, lost the leadership, lagging,
//	          stopping)
//
// The brokers the daemon starts one after another (standing by again after
// losing the leadership) each register their collector on d.reg when made
// and unregister it when stopped, so /metrics follows the current broker.

// httpShutdownTimeout bounds the HTTP server's graceful shutdown.
const httpShutdownTimeout = 5 * time.Second

// checkHTTP checks --http: HOST:PORT, or empty (off).
func checkHTTP(addr string) error {
	if addr == "" {
		return nil
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return configErr("--http %q: use HOST:PORT, e.g. 127.0.0.1:8288", addr)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return configErr("--http %q: the port must be a number from 0 to 65535", addr)
	}
	return nil
}

// mux is the daemon's HTTP mux, made on first use. Other handlers (a web
// page) may be mounted on it before the server starts (startHTTP); it
// already has /metrics, /healthz and /readyz.
func (d *daemon) mux() *http.ServeMux {
	if d.httpMux == nil {
		d.reg = prometheus.NewRegistry()
		d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		d.httpMux = http.NewServeMux()
		d.httpMux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{ErrorLog: nil}))
		d.httpMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintln(w, "ok")
		})
		d.httpMux.HandleFunc("GET /readyz", d.readyz)
	}
	return d.httpMux
}

// readyz answers 200 "ok: <role>" when the current broker is ready, else
// 503 with the reason.
func (d *daemon) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	b := d.cur.Load()
	if b == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "starting: connecting to NATS")
		return
	}
	ok, reason := b.Ready()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
		return
	}
	fmt.Fprintln(w, "ok: "+reason)
}

// startHTTP listens on --http and serves the mux; a listen error is a
// configuration error (exit 78).
func (d *daemon) startHTTP() error {
	if d.cfg.HTTP == "" {
		return nil
	}
	mux := d.mux()
	ln, err := net.Listen("tcp", d.cfg.HTTP)
	if err != nil {
		return configErr("--http %s: cannot listen: %v (give a free HOST:PORT, or drop --http)", d.cfg.HTTP, err)
	}
	mux.Handle("/", webview.Handler(d.listLimits))
	base, end := context.WithCancel(context.Background())
	d.httpEnd = end
	d.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	d.httpDone = make(chan struct{})
	go func() {
		defer close(d.httpDone)
		if err := d.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("HTTP server ended", "addr", d.cfg.HTTP, "err", err)
		}
	}()
	d.log.Info("serving metrics and health over HTTP", "addr", ln.Addr().String())
	return nil
}

// stopHTTP shuts the HTTP server down, if it runs.
func (d *daemon) stopHTTP() {
	if d.http == nil {
		return
	}
	d.httpEnd() // the live view's event streams end now
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := d.http.Shutdown(ctx); err != nil {
		_ = d.http.Close()
	}
	<-d.httpDone
	d.http = nil
}

// listLimits lists the limits for the live view, through a Client on the
// daemon's connection (made on first use: the connection exists by then).
func (d *daemon) listLimits(ctx context.Context) ([]messages.LimitInfo, error) {
	d.viewMu.Lock()
	if d.viewClient == nil {
		if d.nc == nil {
			d.viewMu.Unlock()
			return nil, errors.New("not connected to NATS yet")
		}
		c, err := client.New(d.nc, client.WithPrefix(d.cfg.Prefix), client.WithRetryFor(0))
		if err != nil {
			d.viewMu.Unlock()
			return nil, err
		}
		d.viewClient = c
	}
	c := d.viewClient
	d.viewMu.Unlock()
	return c.ListLimits(ctx)
}
