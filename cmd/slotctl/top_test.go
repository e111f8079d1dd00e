package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// topRow is the line of top's output that starts with the limit's name.
func topRow(t *testing.T, out, name string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	t.Fatalf("top shows no row for %s:\n%s", name, out)
	return ""
}

// TestTopOnceShowsTheLimits: top --once against a real broker prints one
// frame, without terminal codes: a row per limit with its bar of slots,
// held/limit, waiters, a rate limit's level, and the oldest holder's and
// waiter's ages. Not on a terminal, top without --once does the same.
func TestTopOnceShowsTheLimits(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	c := e.Client
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "api", 4, client.WithSlotDecay(0.5)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateLimit(ctx, "idle", 3, client.WithInactive()); err != nil {
		t.Fatal(err)
	}
	lease, err := c.Acquire(ctx, "db", 1, client.WithHolder("first"))
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.Background())
	queued := make(chan struct{})
	got := make(chan *client.Lease, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	go func() {
		l, err := c.Acquire(wctx, "db", 1, client.WithQueued(func(client.Queued) { close(queued) }))
		if err == nil {
			got <- l
		}
	}()
	select {
	case <-queued:
	case <-ctx.Done():
		t.Fatal("the second acquire was not queued")
	}
	for range 4 {
		if err := c.TryRateLimit(ctx, "api", 1); err != nil {
			t.Fatal(err)
		}
	}

	for _, args := range [][]string{{"top", "--once"}, {"top"}} {
		code, out, stderr := at(e, args...)
		what := "slotctl " + strings.Join(args, " ")
		if code != exitOK || stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q", what, code, stderr)
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("%s prints terminal codes when not on a terminal:\n%q", what, out)
		}
		if !strings.HasPrefix(out, "LIMIT ") || !strings.Contains(out, "OLDEST WAITER") {
			t.Errorf("%s: no header:\n%s", what, out)
		}
		db := topRow(t, out, "db")
		if !regexp.MustCompile(`^db +\[#{20}\] +1/1 +1 +- +\d+s +\d+s$`).MatchString(db) {
			t.Errorf("%s: db's row %q, want a full bar, 1/1, 1 waiter, no rate, the holder's and the waiter's ages", what, db)
		}
		// 4 admitted at 0.5/s: 3 or 4 left, depending on how long this took.
		api := topRow(t, out, "api")
		if !regexp.MustCompile(`^api +\[#{15,20}\.{0,5}\] +[34]/4 +0 +[34]/4 -0\.5/s, (free|next \S+) +- +-$`).MatchString(api) {
			t.Errorf("%s: api's row %q, want its level draining at 0.5/s", what, api)
		}
		if idle := topRow(t, out, "idle"); !regexp.MustCompile(`^idle \(inactive\) +\[\.{20}\] +0/3 +0 +- +- +-$`).MatchString(idle) {
			t.Errorf("%s: idle's row %q", what, idle)
		}
	}
	cancelWait()
	select {
	case l := <-got:
		_ = l.Release(context.Background())
	default:
	}
}

// TestTopOnceWithoutBroker: top --once exits 69 when no broker answers.
func TestTopOnceWithoutBroker(t *testing.T) {
	code, _, stderr := slotctl("-s", "nats://127.0.0.1:1", "top", "--once")
	if code != exitUnavailable {
		t.Errorf("top --once without a server: exit %d, stderr %q; want 69", code, stderr)
	}
}

// syncBuffer is a writer the test reads while top writes.
type syncBuffer struct {
	mu     sync.Mutex
	b      strings.Builder
	frames chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if strings.Contains(string(p), ansiEraseDown) {
		select {
		case s.frames <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTopRedrawsInPlace: on a terminal top clears the screen once, then
// draws each frame over the last (cursor home, lines erased to their end,
// the rest erased), shows a failing listing in the frame and goes on, and
// ends without error when interrupted.
func TestTopRedrawsInPlace(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	var mu sync.Mutex
	calls := 0
	list := func(context.Context) ([]client.LimitInfo, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 2 {
			return nil, errors.New("no broker answered")
		}
		return []client.LimitInfo{{Limit: messages.Limit{Name: "db", Limit: 4, Active: true}, ActiveSlots: calls % 5}}, nil
	}
	out := &syncBuffer{frames: make(chan struct{}, 10)}
	done := make(chan error, 1)
	go func() { done <- runTop(ctx, out, list, 100*time.Millisecond, "nats://x:4222") }()
	for n := 0; n < 3; n++ {
		select {
		case <-out.frames:
		case <-ctx.Done():
			t.Fatalf("only %d frames:\n%q", n, out.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("runTop: %v", err)
	}
	s := out.String()
	if !strings.HasPrefix(s, ansiHome+ansiClear) || strings.Count(s, ansiClear) != 1 {
		t.Errorf("the screen is not cleared once at the start:\n%q", s)
	}
	frames := strings.Split(s, ansiHome)[2:]
	if len(frames) < 3 {
		t.Fatalf("%d frames, want 3:\n%q", len(frames), s)
	}
	for i, f := range frames {
		if !strings.HasSuffix(f, ansiEraseDown) {
			t.Errorf("frame %d does not erase below it: %q", i, f)
		}
		for _, line := range strings.SplitAfter(strings.TrimSuffix(f, ansiEraseDown), "\n") {
			if line != "" && !strings.HasSuffix(line, ansiEraseLine+"\n") {
				t.Errorf("frame %d: line %q is not erased to its end", i, line)
			}
		}
		if !strings.HasPrefix(f, "slotctl top · nats://x:4222 · ") {
			t.Errorf("frame %d has no title: %q", i, f)
		}
	}
	if !strings.Contains(frames[0], "1/4") || !strings.Contains(frames[1], "cannot list the limits: no broker answered") ||
		!strings.Contains(frames[2], "3/4") {
		t.Errorf("frames do not follow the listings:\n%q", frames)
	}
}

// TestTopFormats: the bar, the rate level and the ages.
func TestTopFormats(t *testing.T) {
	for _, c := range []struct {
		used, limit int
		want        string
	}{{0, 4, "[....]"}, {1, 100, "[#...]"}, {2, 4, "[##..]"}, {4, 4, "[####]"}, {6, 4, "[####]"}, {1, 0, "[####]"}} {
		if got := slotBar(c.used, c.limit, 4); got != c.want {
			t.Errorf("slotBar(%d, %d) = %q, want %q", c.used, c.limit, got, c.want)
		}
	}
	now := time.Now()
	for d, want := range map[time.Duration]string{0: "0s", 42 * time.Second: "42s", 185 * time.Second: "3m05s",
		2*time.Hour + 3*time.Minute: "2h03m", 98 * time.Hour: "4d02h", -time.Second: "0s"} {
		if got := age(now.Add(-d), now); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	if age(time.Time{}, now) != "-" {
		t.Error("age of the zero time is not -")
	}
	full := &client.LimitInfo{Limit: messages.Limit{Limit: 5, SlotDecayPerSecond: 2}, ActiveSlots: 5, NextSlotInMillis: 250}
	if got := rateLevel(full); got != "5/5 -2/s, next 250ms" {
		t.Errorf("rateLevel of a full rate limit = %q", got)
	}
	if got := rateLevel(&client.LimitInfo{Limit: messages.Limit{Limit: 5}}); got != "-" {
		t.Errorf("rateLevel of a concurrency limit = %q", got)
	}
	// A holder text never reaches top; a hostile limit name cannot exist,
	// but would be escaped.
	var b strings.Builder
	if err := writeTopFrame(&b, []client.LimitInfo{{Limit: messages.Limit{Name: "x\x1b[2J", Limit: 1}}}, now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "\x1b") {
		t.Errorf("a name's control characters are printed raw: %q", b.String())
	}
}
