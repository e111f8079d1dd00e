package integration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// boundsMaxPayload is the server's max_payload in the bounds tests: small
// enough that a limit with thousands of holders does not fit one message.
const boundsMaxPayload = 262144

// TestBoundsOnRequestsAreEnforced sends requests past each bound of
// messages/bounds.go. A broker that decodes any size, stores any holder
// text or trusts any number can be made to use unbounded memory, to write
// records it cannot read back, to overflow a time.Duration into a lease
// that never (or already) expires, or to build a reply the server will not
// carry, after which nobody can inspect or list the limit. Each is refused
// before anything is stored, and limits with thousands of holders, and
// hundreds of limits, can still be inspected and listed.
func TestBoundsOnRequestsAreEnforced(t *testing.T) {
	x := newAuthEnv(t, boundsMaxPayload)
	ctx := ctxT(t, 10*time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "db", 5); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= messages.MaxNames+1; i++ {
		if _, err := x.ops.CreateLimit(ctx, fmt.Sprintf("l%02d", i), 1); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("BodyOverMaxRequestBytesIsRefused", func(t *testing.T) { boundsBodySize(t, x) })
	t.Run("HolderOverMaxHolderLenIsRefused", func(t *testing.T) { boundsHolderLen(t, x) })
	t.Run("MoreThanMaxNamesAreRefused", func(t *testing.T) { boundsNames(t, x) })
	t.Run("NumbersOutOfRangeAreRefused", func(t *testing.T) { boundsNumbers(t, x) })
	t.Run("ThousandsOfHoldersAndHundredsOfLimitsFitMaxPayload", func(t *testing.T) { boundsLargeLimits(t, x) })

	t.Run("StillServesAfterRestart", func(t *testing.T) {
		x.mustServe(t, "before the restart")
		x.restart(t)
		x.mustServe(t, "after the restart")
		x.sameConfig(t, "db", messages.Limit{Limit: 5, Active: true})
		for _, name := range []string{"big", "slow", "nan", "inf", "wrapped"} {
			x.noLimit(t, name)
		}
		if info := x.limit(t, "crowd"); info.HoldersTotal != 3000 {
			t.Errorf("crowd after the restart: %d holders, want 3000", info.HoldersTotal)
		}
	})
}

// boundsBodySize: a body over messages.MaxRequestBytes (under the
// server's max payload) is refused with bad_request, and nothing is stored.
func boundsBodySize(t *testing.T, x *authEnv) {
	nc := x.connect(t, userOps)
	for _, enc := range []messages.Encoding{messages.JSON, messages.Msgpack} {
		req := tryAcquire()
		req.Holder = strings.Repeat("h", 200_000)
		reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), enc, req)
		wantCode(t, "acquire with a 200 KB holder ("+enc.String()+")", reply.Error, messages.CodeBadRequest)
		x.notStored(t, req.WaitID)
	}
	pad := []byte(`{"limit": 1, "pad": "` + strings.Repeat("p", 200_000) + `"}`)
	reply := rawRequest[messages.LimitReply](t, nc, verbSubject("create", "big"), messages.JSON, pad)
	wantCode(t, "create with a 200 KB body", reply.Error, messages.CodeBadRequest)
	x.noLimit(t, "big")
	x.noHolders(t, "db")
}

// boundsHolderLen: a holder of MaxHolderLen+1 bytes is refused with
// invalid_argument; one of MaxHolderLen bytes is taken.
func boundsHolderLen(t *testing.T, x *authEnv) {
	nc := x.connect(t, userOps)
	req := tryAcquire()
	req.Holder = strings.Repeat("h", messages.MaxHolderLen+1)
	reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), messages.JSON, req)
	wantCode(t, "acquire with a holder of MaxHolderLen+1 bytes", reply.Error, messages.CodeInvalidArgument)
	x.notStored(t, req.WaitID)
	x.noHolders(t, "db")

	_, err := x.ops.TryAcquire(ctxT(t, time.Minute), "db", 1, client.WithHolder(req.Holder))
	if !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("client TryAcquire with a holder of MaxHolderLen+1 bytes: %v, want ErrInvalidArgument", err)
	}

	req = tryAcquire()
	req.Holder = strings.Repeat("h", messages.MaxHolderLen)
	reply = rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), messages.JSON, req)
	if reply.Error != nil || reply.Lease == nil {
		t.Fatalf("acquire with a holder of MaxHolderLen bytes: %+v, want granted", reply)
	}
	rel := rawRequest[messages.ReleaseReply](t, nc, verbSubject("release", "db"), messages.JSON, messages.ReleaseRequest{LeaseID: reply.Lease.ID})
	if rel.Error != nil || !rel.Released {
		t.Fatalf("release: %+v", rel)
	}
}

// boundsNames: an acquisition of more than MaxNames limits is refused,
// through the client and raw on acquire-many; MaxNames limits are taken.
func boundsNames(t *testing.T, x *authEnv) {
	var names []string
	for i := 1; i <= messages.MaxNames+1; i++ {
		names = append(names, fmt.Sprintf("l%02d", i))
	}
	ctx := ctxT(t, time.Minute)
	_, err := x.ops.TryAcquire(ctx, names[0], 1, client.WithNames(names[1:]...))
	if !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("client TryAcquire of %d limits: %v, want ErrInvalidArgument", len(names), err)
	}
	nc := x.connect(t, userOps)
	req := tryAcquire()
	reply := rawRequest[messages.AcquireReply](t, nc, subjBase+messages.VerbAcquireMany+"."+strings.Join(names, "."), messages.JSON, req)
	wantCode(t, fmt.Sprintf("acquire-many of %d limits", len(names)), reply.Error, messages.CodeInvalidArgument, messages.CodeBadRequest)
	x.notStored(t, req.WaitID)
	for _, n := range names {
		x.noHolders(t, n)
	}

	l, err := x.ops.TryAcquire(ctx, names[0], 1, client.WithNames(names[1:messages.MaxNames]...))
	if err != nil {
		t.Fatalf("client TryAcquire of MaxNames limits: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// boundsNumbers: numbers that would overflow (lease TTLs in ms that wrap a
// time.Duration, occupy that wraps an int, limits and decays whose drain
// time overflows, NaN and infinities) are refused and change nothing.
func boundsNumbers(t *testing.T, x *authEnv) {
	nc := x.connect(t, userOps)
	acquire, renew := verbSubject("acquire", "db"), verbSubject("renew", "db")

	// A lease that nobody renews in the background, to renew by hand.
	target := tryAcquire()
	target.Holder = "renew target"
	granted := rawRequest[messages.AcquireReply](t, nc, acquire, messages.JSON, target)
	if granted.Error != nil || granted.Lease == nil {
		t.Fatalf("acquire the renew target: %+v", granted)
	}
	leaseID := granted.Lease.ID
	expiry := func() time.Time {
		for _, h := range x.limit(t, "db").Holders {
			if h.LeaseID == leaseID {
				return h.ExpiresAt
			}
		}
		t.Fatalf("lease %s is gone from db", leaseID)
		return time.Time{}
	}
	expires := expiry()

	hugeTTLs := []int64{math.MaxInt64, 9223372036855, messages.MaxTTLMillis + 1, -1}
	for _, ttl := range hugeTTLs {
		req := tryAcquire()
		req.TTLMillis = ttl
		reply := rawRequest[messages.AcquireReply](t, nc, acquire, messages.JSON, req)
		wantCode(t, fmt.Sprintf("acquire ttl_ms %d", ttl), reply.Error, messages.CodeInvalidArgument)
		x.notStored(t, req.WaitID)

		ren := rawRequest[messages.RenewReply](t, nc, renew, messages.JSON, messages.RenewRequest{LeaseID: leaseID, TTLMillis: ttl})
		wantCode(t, fmt.Sprintf("renew ttl_ms %d", ttl), ren.Error, messages.CodeInvalidArgument)
	}
	wrapTTL := packed(t, map[string]any{"occupy": 1, "try": true, "wait_id": nuid.Next(), "ttl_ms": uint64(math.MaxUint64)})
	reply := rawRequest[messages.AcquireReply](t, nc, acquire, messages.Msgpack, wrapTTL)
	wantCode(t, "acquire ttl_ms 18446744073709551615 (msgpack)", reply.Error, messages.CodeInvalidArgument)
	ren := rawRequest[messages.RenewReply](t, nc, renew, messages.Msgpack,
		packed(t, map[string]any{"lease_id": leaseID, "ttl_ms": uint64(math.MaxUint64)}))
	wantCode(t, "renew ttl_ms 18446744073709551615 (msgpack)", ren.Error, messages.CodeInvalidArgument)
	if got := expiry(); !got.Equal(expires) {
		t.Errorf("the refused renewals moved the lease's expiry from %v to %v", expires, got)
	}

	for _, occupy := range []uint64{math.MaxUint64, 1 << 63, 1<<32 + 1} {
		id := nuid.Next()
		body := packed(t, map[string]any{"occupy": occupy, "try": true, "wait_id": id})
		reply := rawRequest[messages.AcquireReply](t, nc, acquire, messages.Msgpack, body)
		wantCode(t, fmt.Sprintf("acquire occupy %d (msgpack)", occupy), reply.Error, messages.CodeInvalidOccupy)
		x.notStored(t, id)
	}
	if info := x.limit(t, "db"); info.HoldersTotal != 1 || info.ActiveSlots != 1 {
		t.Errorf("db has %d holders, %d active slots after the refusals; want only the renew target", info.HoldersTotal, info.ActiveSlots)
	}

	creates := []struct {
		name, what string
		body       []byte
	}{
		{"big", "limit 2000000000", packed(t, map[string]any{"limit": 2_000_000_000})},
		{"big", "limit MaxLimit+1 (JSON)", []byte(fmt.Sprintf(`{"limit": %d}`, messages.MaxLimit+1))},
		{"wrapped", "limit 18446744073709551615", packed(t, map[string]any{"limit": uint64(math.MaxUint64)})},
		{"slow", "limit 10, decay 1e-300 (JSON)", []byte(`{"limit": 10, "slot_decay_per_second": 1e-300}`)},
		{"slow", "limit 10, decay 1e-300", packed(t, map[string]any{"limit": 10, "slot_decay_per_second": 1e-300})},
		{"nan", "decay NaN", packed(t, map[string]any{"limit": 10, "slot_decay_per_second": math.NaN()})},
		{"inf", "decay +Inf", packed(t, map[string]any{"limit": 10, "slot_decay_per_second": math.Inf(1)})},
		{"inf", "decay -Inf", packed(t, map[string]any{"limit": 10, "slot_decay_per_second": math.Inf(-1)})},
	}
	for _, c := range creates {
		reply := rawRequest[messages.LimitReply](t, nc, verbSubject("create", c.name), messages.JSON, c.body)
		wantCode(t, "create "+c.name+" with "+c.what, reply.Error, messages.CodeInvalidArgument)
		x.noLimit(t, c.name)
		if rev := x.kvRevision(t, "limit."+c.name); rev != 0 {
			t.Errorf("create %s with %s: the bucket holds limit.%s", c.name, c.what, c.name)
		}
	}

	dbRev := x.kvRevision(t, "limit.db")
	updates := []struct {
		what string
		body []byte
	}{
		{"limit 2000000000", packed(t, map[string]any{"limit": 2_000_000_000})},
		{"limit 18446744073709551615", packed(t, map[string]any{"limit": uint64(math.MaxUint64)})},
		{"decay 1e-300 (JSON)", []byte(`{"slot_decay_per_second": 1e-300}`)},
		{"decay NaN", packed(t, map[string]any{"slot_decay_per_second": math.NaN()})},
		{"decay +Inf", packed(t, map[string]any{"slot_decay_per_second": math.Inf(1)})},
		{"decay -Inf", packed(t, map[string]any{"slot_decay_per_second": math.Inf(-1)})},
	}
	for _, c := range updates {
		reply := rawRequest[messages.LimitReply](t, nc, verbSubject("update", "db"), messages.JSON, c.body)
		wantCode(t, "update db to "+c.what, reply.Error, messages.CodeInvalidArgument)
	}
	x.sameConfig(t, "db", messages.Limit{Limit: 5, Active: true})
	if rev := x.kvRevision(t, "limit.db"); rev != dbRev {
		t.Errorf("the refused updates rewrote limit.db: revision %d, was %d", rev, dbRev)
	}

	rel := rawRequest[messages.ReleaseReply](t, nc, verbSubject("release", "db"), messages.JSON, messages.ReleaseRequest{LeaseID: leaseID})
	if rel.Error != nil || !rel.Released {
		t.Fatalf("release the renew target: %+v", rel)
	}
}

// boundsLargeLimits: a limit with 3,000 holders of 200-byte holder texts
// answers get and list within the server's max payload, with the totals,
// and ListLimits pages through 200 more limits.
func boundsLargeLimits(t *testing.T, x *authEnv) {
	const holders = 3000
	ctx := ctxT(t, 5*time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "crowd", holders); err != nil {
		t.Fatal(err)
	}
	const workers = 6
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		nc := x.connect(t, userOps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < holders; i += workers {
				req := tryAcquire()
				req.Holder = fmt.Sprintf("holder %04d ", i) + strings.Repeat("x", 188)
				data, _ := messages.Marshal(messages.Msgpack, req)
				m, err := nc.Request(verbSubject("acquire", "crowd"), data, 30*time.Second)
				if err != nil {
					errs <- fmt.Errorf("acquire %d: %w", i, err)
					return
				}
				var reply messages.AcquireReply
				if _, err := messages.Decode(m.Data, &reply); err != nil || reply.Error != nil || reply.Lease == nil {
					errs <- fmt.Errorf("acquire %d: %+v %v", i, reply, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := x.ops.CreateLimit(ctx, fmt.Sprintf("page-%03d", i), 1); err != nil {
			t.Fatal(err)
		}
	}

	nc := x.connect(t, userOps)
	m := rawSend(t, nc, verbSubject("get", "crowd"), []byte("{}"))
	if len(m.Data) > boundsMaxPayload {
		t.Errorf("get crowd: %d bytes, over the max payload %d", len(m.Data), boundsMaxPayload)
	}
	var got messages.LimitReply
	if _, err := messages.Decode(m.Data, &got); err != nil || got.Error != nil || got.Limit == nil {
		t.Fatalf("get crowd: %v %+v", err, got)
	}
	if got.Limit.HoldersTotal != holders || len(got.Limit.Holders) == 0 || len(got.Limit.Holders) > holders || got.Limit.ActiveSlots != holders {
		t.Errorf("get crowd: holders_total %d, %d holders listed, %d active slots; want %d, 1 to %d, %d",
			got.Limit.HoldersTotal, len(got.Limit.Holders), got.Limit.ActiveSlots, holders, holders, holders)
	}
	info, err := x.ops.GetLimit(ctx, "crowd")
	if err != nil || info.HoldersTotal != holders {
		t.Errorf("client GetLimit crowd: %v, %+v", err, info)
	}

	m = rawSend(t, nc, subjList, []byte("{}"))
	if len(m.Data) > boundsMaxPayload {
		t.Errorf("list: %d bytes, over the max payload %d", len(m.Data), boundsMaxPayload)
	}
	limits, err := x.ops.ListLimits(ctx)
	if err != nil {
		t.Fatalf("ListLimits: %v", err)
	}
	want := 1 + (messages.MaxNames + 1) + 1 + 200 // db, l01..l17, crowd, page-000..199
	seen := map[string]bool{}
	for _, l := range limits {
		if seen[l.Name] {
			t.Errorf("ListLimits lists %s twice", l.Name)
		}
		seen[l.Name] = true
		if l.Name == "crowd" && l.HoldersTotal != holders {
			t.Errorf("ListLimits: crowd has holders_total %d, want %d", l.HoldersTotal, holders)
		}
	}
	if len(seen) != want || !seen["crowd"] || !seen["page-000"] || !seen["page-199"] || !seen["db"] {
		t.Errorf("ListLimits returned %d limits, want %d (db, l01..l17, crowd, page-000..page-199)", len(seen), want)
	}

	if r := x.slotctl(t, userOps, "ls", "--json"); r.code != 0 {
		t.Errorf("slotctl ls: exit %d; stderr:\n%s", r.code, r.stderr)
	} else {
		for _, name := range []string{`"crowd"`, `"page-199"`, `"l17"`} {
			if !strings.Contains(r.stdout, name) {
				t.Errorf("slotctl ls --json lacks %s", name)
			}
		}
	}
	if r := x.slotctl(t, userOps, "inspect", "crowd"); r.code != 0 {
		t.Errorf("slotctl inspect crowd: exit %d; stderr:\n%s", r.code, r.stderr)
	}
}

// TestBoundsOnTheQueueAreEnforced checks the bounds on waiters: one inbox
// (one client) may not queue more than --max-waiters-per-inbox, and an
// inbox that leaves grants unanswered loses its other waiters. Without
// them one client can fill the broker's memory with waiters, or stall every
// other client behind grant timeouts for as many waiters as it queued.
func TestBoundsOnTheQueueAreEnforced(t *testing.T) {
	x := newAuthEnv(t, 0, "--max-waiters-per-inbox", "5")
	ctx := ctxT(t, 5*time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "q", 1); err != nil {
		t.Fatal(err)
	}

	t.Run("WaitersPerInboxAreCapped", func(t *testing.T) { boundsWaitersPerInbox(t, x) })
	t.Run("UnansweredGrantsDropTheInbox", func(t *testing.T) {
		// The restart also ends the first rule's check: the broker serves
		// after it, without the refused or cancelled waiters.
		x.mustServe(t, "before the restart")
		x.restart(t, "--grant-timeout", "200ms")
		x.mustServe(t, "after the restart")
		x.noHolders(t, "q")
		boundsUnansweredGrants(t, x)
	})
}

// boundsWaitersPerInbox: with --max-waiters-per-inbox 5 the sixth queued
// acquisition of one client is refused with too_many_waiters (the client's
// ErrTooManyWaiters), raw requests from one inbox likewise, while another
// client still queues.
func boundsWaitersPerInbox(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 2*time.Minute)
	holder, err := x.ops.Acquire(ctx, "q", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Release(ctxT(t, time.Minute)) }()

	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { wcancel(); wg.Wait() }()
	queue := func(c *client.Client) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l, err := c.Acquire(wctx, "q", 1); err == nil {
				_ = l.Release(context.Background())
			}
		}()
	}
	waiters := func(n int) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("%d waiters on q", n), func() bool { return x.limit(t, "q").WaitersTotal == n })
	}

	a := x.client(t, userOps)
	for range 5 {
		queue(a)
	}
	waiters(5)
	_, err = a.Acquire(ctx, "q", 1, client.WithTimeout(30*time.Second))
	if !errors.Is(err, client.ErrTooManyWaiters) || errors.Is(err, client.ErrTimeout) {
		t.Errorf("sixth Acquire of one client: %v, want ErrTooManyWaiters", err)
	}
	wantWireCode(t, "sixth Acquire of one client", err, messages.CodeTooManyWaiters)

	// Raw: five queued from one inbox, the sixth refused. Root has no inbox
	// prefix of its own: under the shared _INBOX the quota is the inbox.
	nc := x.connect(t, userRoot)
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox + ".*")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var raw []string
	for i := range 6 {
		req := queuedAcquire(inbox + "." + nuid.Next())
		reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "q"), messages.JSON, req)
		if i < 5 {
			if reply.Error != nil || reply.Status != messages.StatusQueued {
				t.Fatalf("raw acquire %d from one inbox: %+v, want queued", i+1, reply)
			}
			raw = append(raw, req.WaitID)
			continue
		}
		wantCode(t, "sixth raw acquire from one inbox", reply.Error, messages.CodeTooManyWaiters)
		x.notStored(t, req.WaitID)
	}
	defer func() {
		for _, id := range raw {
			_ = rawRequest[messages.CancelReply](t, nc, verbSubject("cancel", "q"), messages.JSON, messages.CancelRequest{WaitID: id})
		}
	}()

	// Another client (another inbox under the shared prefix) still queues.
	b := x.client(t, userRoot)
	queue(b)
	waiters(11)
}

// boundsUnansweredGrants: with --grant-timeout 200ms, an inbox with 20
// waiters that never answers its grants loses them all after two
// unanswered grants in a row, so that a good client queued behind them is
// granted after two timeouts, not twenty.
func boundsUnansweredGrants(t *testing.T, x *authEnv) {
	ctx := ctxT(t, 2*time.Minute)
	holder, err := x.ops.Acquire(ctx, "q", 1)
	if err != nil {
		t.Fatal(err)
	}

	// Root has no inbox prefix of its own: its quota is its inbox. (A user
	// with a prefix of its own is one quota: see TestQueueBoundsHoldForOneConnection.)
	bad := x.connect(t, userRoot)
	inbox := bad.NewInbox()
	grants, err := bad.SubscribeSync(inbox + ".*") // never read while the grants come: never answered
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 20 {
		req := queuedAcquire(inbox + "." + nuid.Next())
		reply := rawRequest[messages.AcquireReply](t, bad, verbSubject("acquire", "q"), messages.JSON, req)
		if reply.Error != nil || reply.Status != messages.StatusQueued {
			t.Fatalf("bad acquire %d: %+v, want queued", i+1, reply)
		}
		ids = append(ids, req.WaitID)
	}

	good := x.client(t, userOps)
	type result struct {
		l   *client.Lease
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := good.Acquire(ctx, "q", 1)
		res <- result{l, err}
	}()
	eventually(t, 30*time.Second, "21 waiters on q", func() bool { return x.limit(t, "q").WaitersTotal == 21 })
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatalf("the good client's Acquire behind the unanswering inbox: %v", r.err)
	}
	eventually(t, 30*time.Second, "the unanswering inbox's waiters dropped", func() bool {
		info := x.limit(t, "q")
		return info.WaitersTotal == 0 && len(info.Waiters) == 0
	})

	// Every grant to the bad inbox was sent before the good client's.
	if err := bad.Flush(); err != nil {
		t.Fatal(err)
	}
	n, _, _ := grants.Pending()
	requests := 0
	for range n {
		m, err := grants.NextMsg(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var g messages.Grant
		if _, err := messages.Decode(m.Data, &g); err == nil && g.Error == nil && m.Reply != "" {
			requests++
		}
	}
	if requests > 2 {
		t.Errorf("the unanswering inbox was sent %d grants; want it dropped after 2 unanswered in a row", requests)
	}
	if err := r.l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the dropped waiters' records purged", func() bool {
		for _, k := range x.kvKeys(t) {
			for _, id := range ids {
				if strings.HasSuffix(k, "."+id) {
					return false
				}
			}
		}
		return true
	})

	x.restart(t)
	x.mustServe(t, "after the restart")
	x.noHolders(t, "q")
}
