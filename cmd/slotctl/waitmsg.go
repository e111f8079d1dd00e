package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// explainAfter is how long run waits before it says why it waits.
const explainAfter = time.Second

// waitExplainer tells the user, once, why an acquisition waits: its queue
// position and the limit's current holders.
type waitExplainer struct {
	queued   chan int      // the queue position, from client.WithQueued
	acquired chan struct{} // closed when the wait ends
	finished chan struct{} // closed when the explainer returns
}

func newWaitExplainer() *waitExplainer {
	return &waitExplainer{queued: make(chan int, 1), acquired: make(chan struct{}), finished: make(chan struct{})}
}

// onQueued is the client.WithQueued callback.
func (e *waitExplainer) onQueued(position int) {
	select {
	case e.queued <- position:
	default:
	}
}

// run explains the wait on name for occupy slots, if it lasts longer than
// explainAfter. It returns when the wait ends or after explaining.
func (e *waitExplainer) run(ctx context.Context, cl *client.Client, name string, occupy int, timeout time.Duration, w io.Writer) {
	defer close(e.finished)
	var position int
	select {
	case position = <-e.queued:
	case <-e.acquired:
		return
	case <-ctx.Done():
		return
	}
	t := time.NewTimer(explainAfter)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.acquired:
		return
	case <-ctx.Done():
		return
	}
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	holders := "could not list the holders"
	if info, err := cl.GetLimit(gctx, name); err == nil {
		holders = describeHolders(info, time.Now())
	}
	select {
	case <-e.acquired:
		return
	default:
	}
	fmt.Fprintf(w, "slotctl: waiting for %d slot(s) on %s: position %d in the queue; %s\n", occupy, name, position, holders)
}

// done ends the wait and waits for the explainer to return.
func (e *waitExplainer) done() {
	close(e.acquired)
	<-e.finished
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
