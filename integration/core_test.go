package integration

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// coreLimit creates a limit or fails the test.
func coreLimit(t *testing.T, c *client.Client, name string, slots int, opts ...client.LimitOption) {
	t.Helper()
	if _, err := c.CreateLimit(ctxT(t, 10*time.Second), name, slots, opts...); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

// coreInfo returns a limit's info or fails the test.
func coreInfo(t *testing.T, c *client.Client, name string) *client.LimitInfo {
	t.Helper()
	info, err := c.GetLimit(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return info
}

// coreQueued returns an option that signals ch when the broker queues the request.
func coreQueued(ch chan<- int) client.AcquireOption {
	return client.WithQueued(func(q client.Queued) { ch <- q.Position })
}

// coreRecv waits for one value from ch with a generous deadline.
func coreRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// coreRaw sends a JSON request on subject over plain NATS and decodes the JSON reply into out.
func coreRaw(t *testing.T, ev *env, subject, body string, out any) []byte {
	t.Helper()
	nc := ev.conn()
	msg, err := nc.Request(subject, []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	if !json.Valid(msg.Data) {
		t.Fatalf("reply on %s is not JSON: %q", subject, msg.Data)
	}
	if out != nil {
		if err := json.Unmarshal(msg.Data, out); err != nil {
			t.Fatalf("decode reply on %s: %v (%s)", subject, err, msg.Data)
		}
	}
	return msg.Data
}

func TestCoreLimitNames(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)

	cases := []struct {
		name, why string
	}{
		{"a/b", "'/'"},
		{"a%b", "'%'"},
		{"a&b", "'&'"},
		{"a>b", "'>'"},
		{"a<b", "'<'"},
		{"a.b", "'.'"},
		{"a*b", "'*'"},
		{"a b", "a space"},
		{"a\tb", "a tab"},
		{"a\x01b", "control character U+0001"},
		{"", "empty"},
		{strings.Repeat("x", 129), "129 bytes"},
	}
	for _, tc := range cases {
		calls := map[string]error{}
		_, calls["create"] = c.CreateLimit(ctx, tc.name, 1)
		_, calls["get"] = c.GetLimit(ctx, tc.name)
		_, calls["update"] = c.UpdateLimit(ctx, tc.name, client.LimitUpdate{Limit: client.Ptr(2)})
		_, calls["delete"] = c.DeleteLimit(ctx, tc.name)
		_, calls["acquire"] = c.Acquire(ctx, tc.name, 1)
		_, calls["try"] = c.TryAcquire(ctx, tc.name, 1)
		_, calls["acquire-names"] = c.Acquire(ctx, "fine", 1, client.WithNames(tc.name))
		for verb, err := range calls {
			if !errors.Is(err, client.ErrInvalidName) {
				t.Errorf("%s %q: got %v, want ErrInvalidName", verb, tc.name, err)
				continue
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("%s %q: message %q does not name %s", verb, tc.name, err, tc.why)
			}
		}
	}

	ok := strings.Repeat("y", 128)
	coreLimit(t, c, ok, 1)
	l, err := c.Acquire(ctx, ok, 1, client.WithStrict())
	if err != nil {
		t.Fatalf("acquire of a 128-byte name: %v", err)
	}
	if l.Unlimited() {
		t.Fatal("128-byte name: lease is unlimited, want enforced")
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	coreLimit(t, c, "Az09-_=", 1)

	// The broker checks names too, for clients that are not the Go client.
	raw := []struct {
		subject, why string
	}{
		{"slotbroker.v1.acquire.a%b", "'%'"},
		{"slotbroker.v1.acquire.a&b", "'&'"},
		{"slotbroker.v1.acquire.a/b", "'/'"},
		{"slotbroker.v1.acquire.a<b", "'<'"},
		{"slotbroker.v1.acquire.a>b", "'>'"},
		{"slotbroker.v1.acquire.a*b", "'*'"},
		{"slotbroker.v1.create.a%b", "'%'"},
		{"slotbroker.v1.get.a%b", "'%'"},
		{"slotbroker.v1.acquire." + strings.Repeat("z", 129), "129 bytes"},
	}
	for _, r := range raw {
		var reply struct {
			Error *messages.Error `json:"error"`
		}
		body := `{"occupy":1}`
		if strings.Contains(r.subject, ".create.") {
			body = `{"limit":1}`
		}
		coreRaw(t, ev, r.subject, body, &reply)
		if reply.Error == nil || reply.Error.Code != messages.CodeInvalidName {
			t.Errorf("%s: got error %+v, want invalid_name", r.subject, reply.Error)
			continue
		}
		if !strings.Contains(reply.Error.Message, r.why) {
			t.Errorf("%s: message %q does not name %s", r.subject, reply.Error.Message, r.why)
		}
	}
	// An extra name with a bad character in the body is refused as well.
	var reply messages.AcquireReply
	coreRaw(t, ev, "slotbroker.v1.acquire.fine", `{"occupy":1,"names":["x y"]}`, &reply)
	if reply.Error == nil || reply.Error.Code != messages.CodeInvalidName || !strings.Contains(reply.Error.Message, "a space") {
		t.Errorf("names with a space: got %+v, want invalid_name naming a space", reply.Error)
	}
	list, err := c.ListLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Errorf("limits after the bad names: %d, want the 2 good ones", len(list))
	}
}

func TestCoreAdminErrors(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 30*time.Second)
	coreLimit(t, c, "db", 2)

	if _, err := c.CreateLimit(ctx, "db", 3); !errors.Is(err, client.ErrExists) {
		t.Errorf("create existing: %v, want ErrExists", err)
	}
	if info := coreInfo(t, c, "db"); info.Limit.Limit != 2 {
		t.Errorf("create of an existing name changed it: limit %d", info.Limit.Limit)
	}
	if _, err := c.GetLimit(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get missing: %v, want ErrNotFound", err)
	}
	if _, err := c.UpdateLimit(ctx, "nope", client.LimitUpdate{Limit: client.Ptr(1)}); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("update missing: %v, want ErrNotFound", err)
	}
	if _, err := c.DeleteLimit(ctx, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("delete missing: %v, want ErrNotFound", err)
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("empty update: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.CreateLimit(ctx, "neg", -1); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("create negative limit: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.CreateLimit(ctx, "negdecay", 1, client.WithSlotDecay(-1)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("create negative decay: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.CreateLimit(ctx, "nandecay", 1, client.WithSlotDecay(math.NaN())); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("create NaN decay: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{Limit: client.Ptr(-3)}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("update negative limit: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{SlotDecayPerSecond: client.Ptr(-0.5)}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("update negative decay: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{SlotDecayPerSecond: client.Ptr(math.NaN())}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("update NaN decay: %v, want ErrInvalidArgument", err)
	}
	info := coreInfo(t, c, "db")
	if info.Limit.Limit != 2 || info.SlotDecayPerSecond != 0 || !info.Active {
		t.Errorf("refused updates changed the limit: %+v", info.Limit)
	}
	list, err := c.ListLimits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "db" {
		t.Errorf("refused creates left limits behind: %+v", list)
	}
}

func TestCoreRaiseLimitGrantsWaiters(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 1)
	h, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 2)
	got := make(chan *client.Lease, 2)
	for range 2 {
		go func() {
			l, err := c.Acquire(ctx, "db", 1, coreQueued(queued))
			if err != nil {
				t.Errorf("waiter: %v", err)
			}
			got <- l
		}()
		coreRecv(t, queued, "waiter queued")
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{Limit: client.Ptr(3)}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if l := coreRecv(t, got, "waiter granted after the raise"); l == nil {
			t.Fatal("waiter failed")
		}
	}
	info := coreInfo(t, c, "db")
	if info.ActiveSlots != 3 || len(info.Waiters) != 0 || len(info.Holders) != 3 {
		t.Errorf("after raise: active %d waiters %d holders %d, want 3/0/3", info.ActiveSlots, len(info.Waiters), len(info.Holders))
	}
	if h.Err() != nil {
		t.Errorf("first holder: %v", h.Err())
	}
}

func TestCoreLowerLimitRevokesNothing(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 3)
	var held []*client.Lease
	for range 3 {
		l, err := c.Acquire(ctx, "db", 1, client.WithLeaseTTL(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	if _, err := c.UpdateLimit(ctx, "db", client.LimitUpdate{Limit: client.Ptr(1)}); err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 1)
	got := make(chan error, 1)
	var waiter *client.Lease
	go func() {
		l, err := c.Acquire(ctx, "db", 1, coreQueued(queued))
		waiter = l
		got <- err
	}()
	coreRecv(t, queued, "waiter queued")
	// Outlive a renewal: the lowered limit must not void the leases.
	renewed := held[0].ExpiresAt()
	eventually(t, 20*time.Second, "a renewal of a held lease", func() bool { return held[0].ExpiresAt().After(renewed) })
	for i, l := range held {
		if l.Err() != nil {
			t.Fatalf("holder %d lost its lease after the limit was lowered: %v", i, l.Err())
		}
		select {
		case <-l.Done():
			t.Fatalf("holder %d's lease ended", i)
		default:
		}
	}
	info := coreInfo(t, c, "db")
	if info.ActiveSlots != 3 || len(info.Holders) != 3 || len(info.Waiters) != 1 {
		t.Fatalf("after lowering: active %d holders %d waiters %d, want 3/3/1", info.ActiveSlots, len(info.Holders), len(info.Waiters))
	}
	// Usage 2, then 1: still not under the limit of 1.
	for i := range 2 {
		if err := held[i].Release(ctx); err != nil {
			t.Fatal(err)
		}
		info := coreInfo(t, c, "db")
		if len(info.Waiters) != 1 || info.ActiveSlots != 2-i {
			t.Fatalf("after %d releases: waiters %d active %d, want 1 waiter and %d active", i+1, len(info.Waiters), info.ActiveSlots, 2-i)
		}
		select {
		case err := <-got:
			t.Fatalf("waiter admitted while usage %d >= limit 1 (err %v)", 2-i, err)
		default:
		}
	}
	if err := held[2].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := coreRecv(t, got, "waiter granted once usage is under the limit"); err != nil {
		t.Fatal(err)
	}
	if info := coreInfo(t, c, "db"); info.ActiveSlots != 1 {
		t.Errorf("active %d, want 1", info.ActiveSlots)
	}
	_ = waiter.Release(ctx)
}

func TestCoreDeleteFailsWaitersAndVoidsLeases(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 2)
	coreLimit(t, c, "other", 5)
	h, err := c.Acquire(ctx, "db", 2, client.WithLeaseTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 2)
	fails := make(chan error, 2)
	for _, names := range [][]string{nil, {"other"}} {
		go func() {
			_, err := c.Acquire(ctx, "db", 1, client.WithNames(names...), coreQueued(queued))
			fails <- err
		}()
		coreRecv(t, queued, "waiter queued")
	}
	if info := coreInfo(t, c, "other"); len(info.Waiters) != 1 {
		t.Fatalf("other's waiters: %d, want 1", len(info.Waiters))
	}
	if _, err := c.DeleteLimit(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := coreRecv(t, fails, "waiter failed"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("waiter on a deleted limit: %v, want ErrNotFound", err)
		}
	}
	if info := coreInfo(t, c, "other"); len(info.Waiters) != 0 || info.ActiveSlots != 0 {
		t.Errorf("other after db's deletion: waiters %d active %d, want 0/0", len(info.Waiters), info.ActiveSlots)
	}
	select {
	case <-h.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("lease of a deleted limit still held")
	}
	if !errors.Is(h.Err(), client.ErrLeaseLost) {
		t.Errorf("lease of a deleted limit: Err %v, want ErrLeaseLost", h.Err())
	}
	if err := h.Release(ctx); err != nil {
		t.Errorf("release of a lost lease: %v, want nil", err)
	}
}

func TestCoreDeleteVoidsMultiLease(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 2)
	coreLimit(t, c, "other", 1)
	l, err := c.Acquire(ctx, "db", 1, client.WithNames("other"), client.WithLeaseTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteLimit(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if info := coreInfo(t, c, "other"); info.ActiveSlots != 0 || len(info.Holders) != 0 {
		t.Errorf("other after deleting db: active %d holders %d, want 0/0", info.ActiveSlots, len(info.Holders))
	}
	select {
	case <-l.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("multi-limit lease still held after one of its limits was deleted")
	}
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Errorf("Err %v, want ErrLeaseLost", l.Err())
	}
}

func TestCoreInactiveLimit(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "off", 2, client.WithInactive())
	var leases []*client.Lease
	for i := range 5 {
		l, err := c.Acquire(ctx, "off", 2)
		if err != nil {
			t.Fatalf("acquire %d on an inactive limit: %v", i, err)
		}
		if !l.Unlimited() {
			t.Errorf("acquire %d on an inactive limit: lease %q is enforced", i, l.ID())
		}
		leases = append(leases, l)
	}
	if _, err := c.TryAcquire(ctx, "off", 2); err != nil {
		t.Errorf("try on an inactive limit: %v", err)
	}
	info := coreInfo(t, c, "off")
	if info.ActiveSlots != 0 || len(info.Holders) != 0 || len(info.Waiters) != 0 {
		t.Errorf("inactive limit counted: active %d holders %d waiters %d", info.ActiveSlots, len(info.Holders), len(info.Waiters))
	}
	if _, err := c.Acquire(ctx, "off", 1, client.WithStrict()); !errors.Is(err, client.ErrInactive) {
		t.Errorf("strict acquire on an inactive limit: %v, want ErrInactive", err)
	}
	for _, l := range leases {
		if err := l.Release(ctx); err != nil {
			t.Errorf("release unlimited: %v", err)
		}
	}

	// Deactivating a limit lets its waiters through.
	coreLimit(t, c, "on", 1)
	h, err := c.Acquire(ctx, "on", 1)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 1)
	got := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "on", 1, coreQueued(queued))
		got <- err
	}()
	coreRecv(t, queued, "waiter queued")
	if _, err := c.SetActive(ctx, "on", false); err != nil {
		t.Fatal(err)
	}
	if err := coreRecv(t, got, "waiter let through by deactivation"); err != nil {
		t.Fatal(err)
	}
	_ = h.Release(ctx)
}

func TestCoreInvalidOccupyAndTry(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, 60*time.Second)
	coreLimit(t, c, "db", 2)
	for _, n := range []int{0, -1} {
		if _, err := c.Acquire(ctx, "db", n); !errors.Is(err, client.ErrInvalidOccupy) {
			t.Errorf("acquire %d: %v, want ErrInvalidOccupy", n, err)
		}
		if _, err := c.TryAcquire(ctx, "db", n); !errors.Is(err, client.ErrInvalidOccupy) {
			t.Errorf("try %d: %v, want ErrInvalidOccupy", n, err)
		}
		var reply messages.AcquireReply
		coreRaw(t, ev, "slotbroker.v1.acquire.db", `{"occupy":`+itoa(n)+`,"try":true}`, &reply)
		if reply.Error == nil || reply.Error.Code != messages.CodeInvalidOccupy {
			t.Errorf("raw occupy %d: %+v, want invalid_occupy", n, reply.Error)
		}
	}
	// More than the limit can never be granted: refused at once, not queued
	// (ctx has no deadline, so a queued request would hang the test).
	if _, err := c.Acquire(context.Background(), "db", 3); !errors.Is(err, client.ErrInvalidOccupy) {
		t.Errorf("acquire 3 of 2: %v, want ErrInvalidOccupy", err)
	}
	if info := coreInfo(t, c, "db"); len(info.Waiters) != 0 {
		t.Errorf("occupy > limit queued: %d waiters", len(info.Waiters))
	}

	h, err := c.Acquire(ctx, "db", 2)
	if err != nil {
		t.Fatal(err)
	}
	before := coreInfo(t, c, "db").DeniedSlots
	if _, err := c.TryAcquire(context.Background(), "db", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("try when full: %v, want ErrNoSlots", err)
	}
	info := coreInfo(t, c, "db")
	if len(info.Waiters) != 0 {
		t.Errorf("try queued: %d waiters", len(info.Waiters))
	}
	if info.DeniedSlots != before+1 {
		t.Errorf("denied slots %d, want %d", info.DeniedSlots, before+1)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A queue in front keeps try out even with a free slot (FIFO).
	h, err = c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan int, 1)
	got := make(chan error, 1)
	go func() {
		l, err := c.Acquire(ctx, "db", 2, coreQueued(queued))
		if err == nil {
			_ = l.Release(ctx)
		}
		got <- err
	}()
	coreRecv(t, queued, "waiter for 2 queued")
	if _, err := c.TryAcquire(ctx, "db", 1); !errors.Is(err, client.ErrNoSlots) {
		t.Errorf("try past a waiter: %v, want ErrNoSlots", err)
	}
	info = coreInfo(t, c, "db")
	if len(info.Waiters) != 1 || info.DeniedSlots != before+2 {
		t.Errorf("waiters %d denied %d, want 1 and %d", len(info.Waiters), info.DeniedSlots, before+2)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := coreRecv(t, got, "waiter for 2"); err != nil {
		t.Fatal(err)
	}
	l, err := c.TryAcquire(ctx, "db", 2)
	if err != nil {
		t.Fatalf("try on an empty limit: %v", err)
	}
	_ = l.Release(ctx)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestCoreMissingLimit(t *testing.T) {
	ev := newEnv(t)
	var buf syncBuffer
	c := ev.client(client.WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	ctx := ctxT(t, 30*time.Second)
	l, err := c.Acquire(ctx, "ghost", 1)
	if err != nil {
		t.Fatalf("non-strict acquire of a missing limit: %v", err)
	}
	if !l.Unlimited() {
		t.Errorf("lease on a missing limit is not unlimited: %q", l.ID())
	}
	logged := buf.String()
	if !strings.Contains(logged, "level=WARN") || !strings.Contains(logged, "ghost") || !strings.Contains(logged, "not exist") {
		t.Errorf("no warning naming the missing limit; log: %q", logged)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("release unlimited: %v", err)
	}
	if _, err := c.Acquire(ctx, "ghost", 1, client.WithStrict()); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("strict acquire of a missing limit: %v, want ErrNotFound", err)
	}
	if _, err := c.TryAcquire(ctx, "ghost", 1, client.WithStrict()); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("strict try of a missing limit: %v, want ErrNotFound", err)
	}
	// Non-strict with one existing and one missing name enforces the existing one.
	coreLimit(t, c, "real", 1)
	l, err = c.Acquire(ctx, "real", 1, client.WithNames("ghost2"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Unlimited() || len(l.Names()) != 1 || l.Names()[0] != "real" {
		t.Errorf("lease names %v, want [real]", l.Names())
	}
	if !strings.Contains(buf.String(), "ghost2") {
		t.Errorf("no warning naming ghost2; log: %q", buf.String())
	}
	_ = l.Release(ctx)
}

func TestCoreJSONProtocol(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, 30*time.Second)
	c := ev.client()
	coreLimit(t, c, "db", 1)

	var acq messages.AcquireReply
	raw := coreRaw(t, ev, "slotbroker.v1.acquire.db", `{"occupy":1}`, &acq)
	if acq.Error != nil || acq.Status != messages.StatusGranted || acq.Lease == nil || acq.Lease.ID == "" {
		t.Fatalf("acquire reply %s: want granted with a lease id", raw)
	}
	if acq.Lease.Token == 0 {
		t.Errorf("lease token is 0: %s", raw)
	}
	if info := coreInfo(t, c, "db"); info.ActiveSlots != 1 {
		t.Fatalf("active %d after a JSON acquire, want 1", info.ActiveSlots)
	}
	// Full: a try over JSON answers no_slots in JSON.
	var denied messages.AcquireReply
	coreRaw(t, ev, "slotbroker.v1.acquire.db", `{"occupy":1,"try":true}`, &denied)
	if denied.Error == nil || denied.Error.Code != messages.CodeNoSlots {
		t.Errorf("try when full: %+v, want no_slots", denied.Error)
	}

	body := `{"lease_id":"` + acq.Lease.ID + `"}`
	var rel map[string]any
	raw = coreRaw(t, ev, "slotbroker.v1.release.db", body, &rel)
	if rel["released"] != true {
		t.Fatalf("release reply %s: want released true", raw)
	}
	var again map[string]any
	raw = coreRaw(t, ev, "slotbroker.v1.release.db", body, &again)
	if again["released"] != false || again["reason"] == nil || again["reason"] == "" || again["error"] != nil {
		t.Errorf("second release reply %s: want released false with a reason and no error", raw)
	}
	if info := coreInfo(t, c, "db"); info.ActiveSlots != 0 {
		t.Errorf("active %d after release, want 0", info.ActiveSlots)
	}

	var list messages.ListReply
	raw = coreRaw(t, ev, "slotbroker.v1.list", "", &list)
	if list.Error != nil || len(list.Limits) != 1 || list.Limits[0].Name != "db" || list.Limits[0].Limit.Limit != 1 {
		t.Errorf("list reply %s: want the one limit db", raw)
	}
	var got messages.LimitReply
	raw = coreRaw(t, ev, "slotbroker.v1.get.db", "", &got)
	if got.Limit == nil || got.Limit.Name != "db" {
		t.Errorf("get reply %s", raw)
	}
	// Garbage is answered, in JSON, with bad_request.
	var bad messages.AcquireReply
	raw = coreRaw(t, ev, "slotbroker.v1.acquire.db", `{"occupy":`, &bad)
	if bad.Error == nil || bad.Error.Code != messages.CodeBadRequest {
		t.Errorf("truncated JSON: %s, want bad_request", raw)
	}
	_ = ctx
}
