package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/olekukonko/tablewriter"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// printJSON writes v as indented JSON and a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// normalize gives a limit empty (not null) holder and waiter lists for JSON.
func normalize(info *client.LimitInfo) *client.LimitInfo {
	if info.Holders == nil {
		info.Holders = []messages.Holder{}
	}
	if info.Waiters == nil {
		info.Waiters = []messages.Waiter{}
	}
	return info
}

// printTable renders a table with header and rows.
func printTable(w io.Writer, header []string, rows [][]string) error {
	t := tablewriter.NewWriter(w)
	hdr := make([]any, len(header))
	for i, h := range header {
		hdr[i] = h
	}
	t.Header(hdr...)
	if err := t.Bulk(rows); err != nil {
		return err
	}
	return t.Render()
}

// yesNo renders a bool.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// formatFloat renders a float in its shortest form.
func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// formatTime renders a timestamp in local time with its distance from now.
func formatTime(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	s := t.Local().Format("2006-01-02 15:04:05")
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return s + " (in " + d.String() + ")"
	case d < 0:
		return s + " (" + (-d).String() + " ago)"
	default:
		return s + " (now)"
	}
}

// orDash renders an empty string as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// summary is a one-line description of a limit's configuration.
func summary(info *client.LimitInfo) string {
	s := fmt.Sprintf("limit %q: %d slots", info.Name, info.Limit.Limit)
	if info.Limit.Limit == 1 {
		s = strings.TrimSuffix(s, "s")
	}
	if info.SlotDecayPerSecond > 0 {
		s += fmt.Sprintf(", slot decay %s/s", formatFloat(info.SlotDecayPerSecond))
	}
	if info.Active {
		s += ", active"
	} else {
		s += ", inactive"
	}
	return s
}

// printLimitResult prints the limit a create, update, enable or disable
// left: a line "<verb> <summary>", or JSON.
func printLimitResult(w io.Writer, verb string, info *client.LimitInfo, asJSON bool) error {
	if asJSON {
		return printJSON(w, normalize(info))
	}
	_, err := fmt.Fprintf(w, "%s %s\n", verb, summary(info))
	return err
}

// nextSlot is when a rate limit frees its next slot: "now", a duration, or
// "-" for a limit without slot decay.
func nextSlot(info *client.LimitInfo) string {
	switch {
	case info.SlotDecayPerSecond <= 0:
		return "-"
	case info.NextSlotInMillis > 0:
		return (time.Duration(info.NextSlotInMillis) * time.Millisecond).String()
	default:
		return "now"
	}
}

// displayText makes text that other users chose (a holder, anything an
// event carries) safe to print on a terminal: every character that is not
// printable (control characters such as ESC and CR, which could move the
// cursor, erase lines or recolour the operator's screen, and invisible
// format characters such as bidi overrides) is escaped as strconv.Quote
// would escape it (\r, \x1b, \u202e), and every byte of invalid UTF-8 as
// \xNN; no quotes are added. Printable text comes back unchanged. JSON
// output needs none of this: it is escaped already.
func displayText(text string) string {
	clean := true
	for _, r := range text {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return text
	}
	var b strings.Builder
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", text[i])
		case strconv.IsPrint(r):
			b.WriteString(text[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
