package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/slotbroker/slotbroker/messages"
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
// value may carry text from the broker or other users). The client's
// warnings that limits are not enforced become slotctl's (unenforced).
func (h *warnHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("slotctl: warning: ")
	var kv []string
	var missing, inactive string
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "missing":
			missing = a.Value.Resolve().String()
		case "inactive":
			inactive = a.Value.Resolve().String()
		}
		kv = append(kv, displayText(fmt.Sprintf("%s=%v", a.Key, a.Value.Resolve())))
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	switch {
	case missing != "":
		b.WriteString(unenforced(missing, "does not exist", "do not exist", "create"))
	case inactive != "":
		b.WriteString(unenforced(inactive, "is inactive", "are inactive", "enable"))
	default:
		b.WriteString(displayText(strings.TrimPrefix(r.Message, "slotbroker: ")))
		if len(kv) > 0 {
			b.WriteString(" (" + strings.Join(kv, " ") + ")")
		}
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

// unenforced is the warning of run or rate on limits (names, joined by ",")
// that are missing or inactive, and so not enforced: it says how to make
// that an error instead.
func unenforced(names, one, many, fix string) string {
	subject, state, pronoun, them := "limit "+names, one, "it is", "it"
	how := fix + " it (slotctl " + fix + " " + names + ")"
	if fix == "create" {
		how = "create it (slotctl create " + names + " --limit N)"
	}
	if family, key, keyed := messages.SplitKeyed(names); keyed && !strings.Contains(names, ",") {
		// A key of a per-key limit: the commands name the family.
		subject = "limit " + family + " (key " + key + ")"
		how = fix + " it (slotctl " + fix + " " + family + ")"
		if fix == "create" {
			how = "create it (slotctl create " + family + " --limit N --per-key)"
		}
	}
	if strings.Contains(names, ",") {
		subject, state, pronoun, them, how = "limits "+names, many, "they are", "them", fix+" them"
	}
	return displayText(fmt.Sprintf("%s %s, so %s not enforced: going on without %s; %s, or make this an error with --strict or %s=1",
		subject, state, pronoun, them, how, strictEnv))
}
