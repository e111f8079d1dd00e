package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// limitsNamed are limits with the given names.
func limitsNamed(names ...string) []messages.LimitInfo {
	out := make([]messages.LimitInfo, len(names))
	for i, n := range names {
		out[i].Name = n
		out[i].Limit.Limit = 1
	}
	return out
}

// nameList is the names of limits, joined with ",".
func nameList(limits []client.LimitInfo) string {
	var out []string
	for _, l := range limits {
		out = append(out, l.Name)
	}
	return strings.Join(out, ",")
}

// TestListLimitsFollowsPages: ListLimits asks for the first page, then for
// each next page after the cursor the one before gave, and returns the
// limits of every page, in order.
func TestListLimitsFollowsPages(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	reqs := standIn(t, connect(t, s), "slotbroker.v1.list")
	ctx := testContext(t)
	type result struct {
		limits []client.LimitInfo
		err    error
	}
	done := make(chan result, 1)
	go func() {
		l, err := c.ListLimits(ctx)
		done <- result{l, err}
	}()
	pages := []struct {
		after string
		reply messages.ListReply
	}{
		{"", messages.ListReply{Limits: limitsNamed("a", "b"), Next: "b"}},
		{"b", messages.ListReply{Limits: limitsNamed("c", "d"), Next: "d"}},
		{"d", messages.ListReply{Limits: limitsNamed("e")}},
	}
	for _, p := range pages {
		m := next(t, reqs, "list request")
		var req messages.ListRequest
		decode(t, m, &req)
		if req.After != p.after {
			t.Fatalf("list request after %q; want after %q", req.After, p.after)
		}
		respond(t, m, p.reply)
	}
	r := <-done
	if r.err != nil || nameList(r.limits) != "a,b,c,d,e" {
		t.Fatalf("ListLimits: %q, %v; want a,b,c,d,e", nameList(r.limits), r.err)
	}
}

// TestListLimitsStopsOnACursorThatDoesNotAdvance: a broker whose next
// cursor does not advance (repeats the last one or goes back) makes
// ListLimits fail with ErrUnavailable instead of asking forever.
func TestListLimitsStopsOnACursorThatDoesNotAdvance(t *testing.T) {
	s := plainServer(t)
	c := clientOn(t, connect(t, s))
	reqs := standIn(t, connect(t, s), "slotbroker.v1.list")
	ctx := testContext(t)
	for _, cursors := range [][]string{{"b", "b"}, {"b", "a"}} {
		done := make(chan error, 1)
		go func() {
			_, err := c.ListLimits(ctx)
			done <- err
		}()
		for _, cursor := range cursors {
			respond(t, next(t, reqs, "list request"), messages.ListReply{Limits: limitsNamed("a", "b"), Next: cursor})
		}
		if err := <-done; !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("pages with cursors %q: %v; want ErrUnavailable", cursors, err)
		}
		select {
		case m := <-reqs:
			t.Fatalf("list request after %d pages with cursors %q: %s", len(cursors), cursors, m.Data)
		default:
		}
	}
}

// TestListLimitsFromBroker: ListLimits returns every limit a broker has,
// sorted by name.
func TestListLimitsFromBroker(t *testing.T) {
	e := embedded(t)
	c, _ := newClient(t, e)
	ctx := testContext(t)
	for _, n := range []string{"c", "a", "b"} {
		if _, err := c.CreateLimit(ctx, n, 1); err != nil {
			t.Fatal(err)
		}
	}
	limits, err := c.ListLimits(ctx)
	if err != nil || nameList(limits) != "a,b,c" {
		t.Fatalf("ListLimits: %q, %v; want a,b,c", nameList(limits), err)
	}
}
