// Package webview serves slotbroker's live view: a read-only web page that
// shows every limit as a bar of the slots held against the limit, its queue,
// a rate limit's level draining, and who holds and who waits and for how
// long, updated live over server-sent events.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary: no
// build step, nothing fetched from elsewhere. Routes, relative to where the
// handler is mounted (mount it at a path ending in "/"):
//
//	/            the page (and its style.css and app.js)
//	/api/limits  the current snapshot as JSON
//	/events      snapshots as server-sent events: one at once, then one
//	             whenever the limits change (src is polled every 500 ms
//	             while anybody listens)
//
// A snapshot is {"now": the server's time, "limits": [LimitInfo...]}, or
// {"now": ..., "error": "..."} when src failed.
//
// An event stream ends when its request's context does: http.Server's
// Shutdown waits for it, so a server that shuts down gracefully should
// cancel its BaseContext (or Close) to end the streams.
package webview

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Source lists the limits with their holders and waiters.
type Source func(ctx context.Context) ([]messages.LimitInfo, error)

// PollInterval is how often the limits are listed while an event stream is open.
const PollInterval = 500 * time.Millisecond

// fetchTimeout bounds one call of the Source.
const fetchTimeout = 5 * time.Second

// keepAlive is how often an idle event stream gets a comment, so proxies
// and the browser keep it open.
const keepAlive = 15 * time.Second

//go:embed static
var static embed.FS

// securityHeaders forbid everything the page does not need: no inline
// script or style, nothing from another origin, no framing.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
}

// Handler serves the live view of the limits src lists.
func Handler(src Source) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is there at build time
	}
	h := &hub{src: src, subs: map[chan []byte]struct{}{}}
	files := http.FileServerFS(sub)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", h.serveEvents)
	mux.HandleFunc("GET /api/limits", h.serveLimits)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	for _, name := range []string{"style.css", "app.js"} {
		mux.Handle("GET /"+name, files)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		mux.ServeHTTP(w, r)
	})
}

// snapshot is what /api/limits and every event carry.
type snapshot struct {
	Now    time.Time       `json:"now"`
	Limits json.RawMessage `json:"limits,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// state is one listing of the limits: their JSON, or the error.
type state struct {
	limits json.RawMessage
	err    string
}

func (s state) equal(o state) bool { return s.err == o.err && bytes.Equal(s.limits, o.limits) }

// encode is the snapshot of s at now, as one line of JSON.
func (s state) encode(now time.Time) []byte {
	b, err := json.Marshal(snapshot{Now: now.UTC(), Limits: s.limits, Error: s.err})
	if err != nil { // a RawMessage from json.Marshal and a string: cannot fail
		panic(err)
	}
	return b
}

// fetch lists the limits once.
func fetch(ctx context.Context, src Source) state {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	limits, err := src(ctx)
	if err != nil {
		return state{err: err.Error()}
	}
	if limits == nil {
		limits = []messages.LimitInfo{}
	}
	for i := range limits {
		if limits[i].Holders == nil {
			limits[i].Holders = []messages.Holder{}
		}
		if limits[i].Waiters == nil {
			limits[i].Waiters = []messages.Waiter{}
		}
	}
	b, err := json.Marshal(limits)
	if err != nil {
		return state{err: err.Error()}
	}
	return state{limits: b}
}

// hub polls the source while at least one event stream is open and hands
// each change to every stream.
type hub struct {
	src Source

	mu   sync.Mutex
	subs map[chan []byte]struct{}
	// last is the latest listing, valid while polling.
	last    state
	hasLast bool
	stop    context.CancelFunc
}

// subscribe registers an event stream: its channel gets the latest
// snapshot at once (when there is one) and then every change, the latest
// replacing one not yet taken. cancel unregisters it.
func (h *hub) subscribe() (ch chan []byte, cancel func()) {
	ch = make(chan []byte, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[ch] = struct{}{}
	if h.stop == nil {
		ctx, stop := context.WithCancel(context.Background())
		h.stop = stop
		go h.poll(ctx)
	} else if h.hasLast {
		ch <- h.last.encode(time.Now())
	}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs, ch)
		if len(h.subs) == 0 && h.stop != nil {
			h.stop()
			h.stop, h.hasLast = nil, false
		}
	}
}

// poll lists the limits now and every PollInterval until ctx ends, and
// sends each listing that differs from the one before to every stream.
func (h *hub) poll(ctx context.Context) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		s := fetch(ctx, h.src)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		if ctx.Err() == nil && (!h.hasLast || !s.equal(h.last)) {
			h.last, h.hasLast = s, true
			b := s.encode(time.Now())
			for ch := range h.subs {
				replace(ch, b)
			}
		}
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// replace puts b in ch, dropping a snapshot the stream has not taken yet.
// Only the poller (under the hub's lock) sends after subscribe.
func replace(ch chan []byte, b []byte) {
	select {
	case <-ch:
	default:
	}
	ch <- b
}

// serveLimits answers with the current snapshot.
func (h *hub) serveLimits(w http.ResponseWriter, r *http.Request) {
	s := fetch(r.Context(), h.src)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if s.err != "" {
		w.WriteHeader(http.StatusBadGateway)
	}
	_, _ = w.Write(append(s.encode(time.Now()), '\n'))
}

// serveEvents streams snapshots as server-sent events until the client goes.
func (h *hub) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives a server's WriteTimeout
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	ch, cancel := h.subscribe()
	defer cancel()
	idle := time.NewTicker(keepAlive)
	defer idle.Stop()
	for {
		var msg []byte
		select {
		case <-r.Context().Done():
			return
		case b := <-ch:
			msg = append(append([]byte("event: snapshot\ndata: "), b...), "\n\n"...)
		case <-idle.C:
			msg = []byte(": keep-alive\n\n")
		}
		if _, err := w.Write(msg); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
