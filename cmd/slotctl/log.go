package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// warnHandler is a slog.Handler that prints the client's warnings as
// "slotctl: warning: <message> (key=value ...)" lines.
type warnHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	attrs []slog.Attr
}

func newWarnHandler(w io.Writer) *warnHandler { return &warnHandler{mu: &sync.Mutex{}, w: w} }

// Enabled reports whether a record of level l is printed: warnings and errors.
func (h *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

// Handle prints one record on one line, its text through displayText (a
// value may carry text from the broker or other users).
func (h *warnHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("slotctl: warning: ")
	b.WriteString(displayText(strings.TrimPrefix(r.Message, "slotbroker: ")))
	var kv []string
	add := func(a slog.Attr) bool {
		kv = append(kv, displayText(fmt.Sprintf("%s=%v", a.Key, a.Value.Resolve())))
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if len(kv) > 0 {
		b.WriteString(" (" + strings.Join(kv, " ") + ")")
	}
	b.WriteString("\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// WithAttrs returns a handler that also prints attrs.
func (h *warnHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &warnHandler{mu: h.mu, w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

// WithGroup returns h: groups are flattened.
func (h *warnHandler) WithGroup(string) slog.Handler { return h }
