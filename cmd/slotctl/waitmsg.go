package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// explainAfter is how long run waits before it says why it waits.
const explainAfter = time.Second

// waitExplainer tells the user why an acquisition waits: its queue
// position, the broker's estimate of the wait and the limit's current
// holders, once it has waited explainAfter; then the position and the
// estimate again at each new answer of the broker (the client sends a
// waiting acquisition again every 30 s) that changes them.
type waitExplainer struct {
	queued   chan client.Queued // the latest answer, from client.WithQueueUpdates
	acquired chan struct{}      // closed when the wait ends
	finished chan struct{}      // closed when the explainer returns
	// key and keyed: the wait is for key of a per-key limit (run --key).
	key   string
	keyed bool
}

func newWaitExplainer() *waitExplainer {
	return &waitExplainer{queued: make(chan client.Queued, 1), acquired: make(chan struct{}), finished: make(chan struct{})}
}

// onQueued is the client.WithQueueUpdates callback: it keeps the latest
// answer, never blocking the acquisition.
func (e *waitExplainer) onQueued(q client.Queued) {
	for {
		select {
		case e.queued <- q:
			return
		default:
		}
		select {
		case <-e.queued: // replaced by the newer answer
		default:
		}
	}
}

// run explains the wait on name for occupy slots, if it lasts longer than
// explainAfter, and again at each answer that changes what it said. It
// returns when the wait ends.
func (e *waitExplainer) run(ctx context.Context, cl *client.Client, name string, occupy int, timeout time.Duration, w io.Writer) {
	defer close(e.finished)
	var q client.Queued
	select {
	case q = <-e.queued:
	case <-e.acquired:
		return
	case <-ctx.Done():
		return
	}
	t := time.NewTimer(explainAfter)
	defer t.Stop()
	for waiting := true; waiting; {
		select {
		case <-t.C:
			waiting = false
		case q = <-e.queued:
		case <-e.acquired:
			return
		case <-ctx.Done():
			return
		}
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	holders := "could not list the holders"
	var info *client.LimitInfo
	var err error
	if e.keyed {
		// The holders of the key waited for, not of its family (none).
		info, err = cl.GetKey(gctx, name, e.key)
		name += " key " + e.key
	} else {
		info, err = cl.GetLimit(gctx, name)
	}
	if err == nil {
		holders = describeHolders(info, time.Now())
	}
	select {
	case <-e.acquired:
		return
	default:
	}
	said := queuedText(q)
	fmt.Fprintf(w, "slotctl: waiting for %d slot(s) on %s: %s; %s\n", occupy, displayText(name), said, holders)
	for {
		select {
		case q = <-e.queued:
			if now := queuedText(q); now != said {
				said = now
				fmt.Fprintf(w, "slotctl: still waiting on %s: %s\n", displayText(name), said)
			}
		case <-e.acquired:
			return
		case <-ctx.Done():
			return
		}
	}
}

// done ends the wait and waits for the explainer to return.
func (e *waitExplainer) done() {
	close(e.acquired)
	<-e.finished
}

// queuedText is where a waiting acquisition stands: "position 3 in the
// queue, about 12s (from 20 recent holds)" (or "any moment now" for an
// estimate under 50 ms), "position 1 in the queue, exactly 1.5s (at
// 14:02:03)", or "position 2 in the queue, no estimate yet".
func queuedText(q client.Queued) string {
	s := fmt.Sprintf("position %d in the queue, ", q.Position)
	switch {
	case !q.EstimateKnown:
		return s + "no estimate yet" // no hold of the limit has ended yet
	case q.Exact:
		return s + fmt.Sprintf("exactly %s (at %s)", roughDuration(q.Estimate), q.At.Add(q.Estimate).Local().Format("15:04:05"))
	}
	about := "about " + roughDuration(q.Estimate)
	if q.Estimate < 50*time.Millisecond {
		about = "any moment now" // the holds run longer than they used to
	}
	return s + fmt.Sprintf("%s (from %s)", about, strings.Replace(holdsText(q.Samples), " ", " recent ", 1))
}

// holdsText is "1 hold", "20 holds".
func holdsText(n int) string {
	if n == 1 {
		return "1 hold"
	}
	return fmt.Sprintf("%d holds", n)
}

// roughDuration renders a wait to a tenth of a second under 10 s, to the
// second above: "1.5s", "12s", "2m3s".
func roughDuration(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// estimateCell is a waiter's estimate in inspect's table: "~12s (20
// holds)", "exactly 1.5s", or "-" when the broker has none.
func estimateCell(e *messages.WaitEstimate) string {
	if e == nil {
		return "-"
	}
	d := roughDuration(time.Duration(e.Millis) * time.Millisecond)
	if e.Basis == messages.EstimateRate {
		return "exactly " + d
	}
	return fmt.Sprintf("~%s (%s)", d, holdsText(e.Samples))
}

// describeHolders lists who holds a limit's slots. Holder texts are quoted
// with %q, which escapes what displayText escapes.
func describeHolders(info *client.LimitInfo, now time.Time) string {
	if len(info.Holders) == 0 && info.HoldersTotal == 0 {
		return fmt.Sprintf("%s has no holders (%d of %d slots occupied)", displayText(info.Name), info.ActiveSlots, info.Limit.Limit)
	}
	parts := make([]string, 0, len(info.Holders))
	for _, h := range info.Holders {
		parts = append(parts, fmt.Sprintf("lease %s (%d slot(s), holder %q, token %d, since %s)",
			displayText(h.LeaseID), h.Occupy, orDash(h.Holder), h.Token, formatTime(h.AcquiredAt, now)))
	}
	switch more := info.HoldersTotal - len(info.Holders); {
	case more > 0 && len(parts) == 0:
		parts = append(parts, fmt.Sprintf("%d holder(s) not listed", more))
	case more > 0:
		parts = append(parts, fmt.Sprintf("%d more", more))
	}
	return fmt.Sprintf("%d of %d slots held by: %s", info.ActiveSlots, info.Limit.Limit, strings.Join(parts, "; "))
}

// slotsOn says which slots a wait is for: "1 slot on db", "2 slots on each
// of db,api".
func slotsOn(occupy int, names []string) string {
	s := fmt.Sprintf("%d slot", occupy)
	if occupy != 1 {
		s += "s"
	}
	if len(names) > 1 {
		return s + " on each of " + displayText(strings.Join(names, ","))
	}
	return s + " on " + displayText(names[0])
}

// timedOut is the error of a wait that --timeout ended: "timed out after
// <timeout> (--timeout) waiting for <what>", then, when the wait failed for
// more than the timeout (no broker answered), that cause. It matches err,
// which sets the exit status.
func timedOut(err error, timeout time.Duration, what string) error {
	msg := fmt.Sprintf("timed out after %v (--timeout) waiting for %s", timeout, what)
	if cause := timeoutCause(err); cause != "" {
		msg += ": " + cause
	}
	return &msgError{msg: msg, kind: err}
}

// timeoutCause is what err says besides that the wait timed out, without
// the library's "slotbroker: " prefixes: "" for a plain client.ErrTimeout;
// for one that no broker answered (client.ErrTimeout and ErrUnavailable,
// "timed out waiting for slots (broker unavailable: no slotbroker answered
// on <subject>: <why>)") the part in parentheses, from "no slotbroker".
func timeoutCause(err error) string {
	text := strings.ReplaceAll(err.Error(), "slotbroker: ", "")
	timeout := strings.TrimPrefix(client.ErrTimeout.Error(), "slotbroker: ")
	if rest, ok := strings.CutPrefix(text, timeout); ok {
		text = strings.TrimSpace(rest)
		if inner, ok := strings.CutPrefix(text, "("); ok {
			text = strings.TrimSuffix(inner, ")")
		}
	}
	unavailable := strings.TrimPrefix(client.ErrUnavailable.Error(), "slotbroker: ")
	text = strings.TrimPrefix(strings.TrimPrefix(text, unavailable), ": ")
	return text
}

// noSlotFree is the error of run --try or rate --try when the slots are not
// free: "--try: could not get <what> at once: <the broker's why>". It
// matches err (client.ErrNoSlots: exit 75).
func noSlotFree(err error, what string) error {
	msg := fmt.Sprintf("--try: could not get %s at once", what)
	if why := strings.ReplaceAll(err.Error(), "slotbroker: ", ""); why != "" && why != "no slots" {
		msg += ": " + why
	}
	return &msgError{msg: msg, kind: err}
}
