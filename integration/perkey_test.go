package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// pkFamily creates the per-key limit name of slots slots (and decay, when
// not 0) through c.
func pkFamily(t *testing.T, c *client.Client, name string, slots int, decay float64) {
	t.Helper()
	opts := []client.LimitOption{client.PerKey()}
	if decay > 0 {
		opts = append(opts, client.WithSlotDecay(decay))
	}
	if _, err := c.CreateLimit(ctxT(t, 10*time.Second), name, slots, opts...); err != nil {
		t.Fatalf("create per-key %s: %v", name, err)
	}
}

// pkKeys returns the live keys of family name as get reports them: key ->
// its info, and the total.
func pkKeys(t *testing.T, c *client.Client, name string) (map[string]messages.KeyInfo, int) {
	t.Helper()
	info, err := c.GetLimit(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	keys := map[string]messages.KeyInfo{}
	for _, k := range info.Keys {
		keys[k.Key] = k
	}
	return keys, info.KeysTotal
}

// pkWaitIdle polls until family name has no live key.
func pkWaitIdle(t *testing.T, c *client.Client, name string) {
	t.Helper()
	eventually(t, 20*time.Second, name+" has no live key", func() bool {
		_, total := pkKeys(t, c, name)
		return total == 0
	})
}

// pkBucketKeys lists the keys of the broker's bucket that belong to a key
// of family name ("...<name>.<key>"): a key's limit, when idle, keeps none.
func pkBucketKeys(t *testing.T, nc *nats.Conn, name string) []string {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	kv, err := js.KeyValue(ctx, messages.DefaultBucket)
	if err != nil {
		t.Fatalf("the broker's bucket: %v", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("list the bucket's keys: %v", err)
	}
	var out []string
	for k := range lister.Keys() {
		if strings.Contains(k, "."+name+".") {
			out = append(out, k)
		}
	}
	return out
}

// pkAcquireQueued starts an acquisition of one slot of key on family name
// and returns once the broker has queued it; the lease (or error) arrives
// on the channel.
func pkAcquireQueued(t *testing.T, ctx context.Context, c *client.Client, name string, opts ...client.AcquireOption) <-chan pkResult {
	t.Helper()
	out := make(chan pkResult, 1)
	queued := make(chan struct{})
	go func() {
		l, err := c.Acquire(ctx, name, 1, append(opts, client.WithQueued(func(client.Queued) { close(queued) }))...)
		out <- pkResult{l, err}
	}()
	select {
	case <-queued:
	case r := <-out:
		t.Fatalf("acquisition on %s was not queued: %+v", name, r)
	case <-ctx.Done():
		t.Fatalf("acquisition on %s not queued before the test's deadline", name)
	}
	return out
}

type pkResult struct {
	lease *client.Lease
	err   error
}

// pkGranted waits for the lease of a queued acquisition.
func pkGranted(t *testing.T, ctx context.Context, what string, ch <-chan pkResult) *client.Lease {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.lease
	case <-ctx.Done():
		t.Fatalf("%s: not granted before the test's deadline", what)
		return nil
	}
}

// TestPerKeyLimitGivesEachKeyTheFamilysSlots: every key of a per-key limit
// has the family's slots to itself: a key that is full refuses a try while
// another key still has room. A family is acquired only with a key, and a
// plain limit only without one.
func TestPerKeyLimitGivesEachKeyTheFamilysSlots(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	pkFamily(t, c, "tenant", 2, 0)
	if _, err := c.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatal(err)
	}
	var held []*client.Lease
	for i := range 2 {
		l, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("acme"))
		if err != nil {
			t.Fatalf("acme's slot %d: %v", i+1, err)
		}
		if got := l.Names(); len(got) != 1 || got[0] != "tenant.acme" {
			t.Errorf("acme's lease names %q, want [tenant.acme]", got)
		}
		held = append(held, l)
	}
	if _, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("acme")); !errors.Is(err, client.ErrNoSlots) {
		t.Fatalf("acme's 3rd slot: %v, want ErrNoSlots", err)
	}
	for i := range 2 {
		l, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("globex"))
		if err != nil {
			t.Fatalf("globex's slot %d while acme is full: %v", i+1, err)
		}
		held = append(held, l)
	}
	keys, total := pkKeys(t, c, "tenant")
	if total != 2 || keys["acme"].ActiveSlots != 2 || keys["acme"].HoldersTotal != 2 || keys["globex"].ActiveSlots != 2 {
		t.Errorf("tenant's keys %+v (total %d), want acme and globex with 2 slots held each", keys, total)
	}
	if _, err := c.TryAcquire(ctx, "tenant", 1); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("acquire of the family without a key: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.TryAcquire(ctx, "db", 1, client.WithKey("acme")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("acquire of a plain limit with a key: %v, want ErrInvalidArgument", err)
	}
	for _, l := range held {
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release %v: %v", l.Names(), err)
		}
	}
	pkWaitIdle(t, c, "tenant")
}

// TestPerKeyWaiterIsWokenOnlyByItsKeysRelease: a waiter on a key stays
// queued when another key's slot is freed, and is granted at the release
// on its own key.
func TestPerKeyWaiterIsWokenOnlyByItsKeysRelease(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	pkFamily(t, c, "tenant", 1, 0)
	acme, err := c.Acquire(ctx, "tenant", 1, client.WithKey("acme"))
	if err != nil {
		t.Fatal(err)
	}
	globex, err := c.Acquire(ctx, "tenant", 1, client.WithKey("globex"))
	if err != nil {
		t.Fatal(err)
	}
	waiting := pkAcquireQueued(t, ctx, ev.client(), "tenant", client.WithKey("acme"))
	if err := globex.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The release is answered once applied: a get after it sees its effect.
	keys, _ := pkKeys(t, c, "tenant")
	if k := keys["acme"]; k.WaitersTotal != 1 || k.HoldersTotal != 1 {
		t.Fatalf("after globex's release acme has %+v, want its holder and its waiter still", k)
	}
	select {
	case r := <-waiting:
		t.Fatalf("acme's waiter was granted by globex's release: %+v", r)
	default:
	}
	if err := acme.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l := pkGranted(t, ctx, "acme's waiter after acme's release", waiting)
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	pkWaitIdle(t, c, "tenant")
}

// TestIdleKeyIsDroppedAndLeavesNoRecord: a key whose last lease is
// released is dropped (get on the family lists no key), and the broker's
// bucket holds nothing of it; get on the idle key still answers, with the
// family's configuration and nothing held.
func TestIdleKeyIsDroppedAndLeavesNoRecord(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	pkFamily(t, c, "tenant", 3, 0)
	var held []*client.Lease
	for _, key := range []string{"acme", "globex", "initech"} {
		l, err := c.Acquire(ctx, "tenant", 2, client.WithKey(key), client.WithHolder("job of "+key))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	if _, total := pkKeys(t, c, "tenant"); total != 3 {
		t.Fatalf("tenant has %d live keys, want 3", total)
	}
	for _, l := range held {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pkWaitIdle(t, c, "tenant")
	if keys := pkBucketKeys(t, ev.conn(), "tenant"); len(keys) != 0 {
		t.Errorf("the bucket keeps %q for keys that are idle", keys)
	}
	info, err := c.GetKey(ctx, "tenant", "acme")
	if err != nil {
		t.Fatalf("get of the idle key tenant.acme: %v", err)
	}
	if info.Name != "tenant" || info.Key != "acme" || info.Limit.Limit != 3 || info.ActiveSlots != 0 || info.HoldersTotal != 0 {
		t.Errorf("idle key's info %+v, want name tenant, key acme, limit 3, nothing held", info)
	}
}

// TestRateLimitWithKey: each key of a per-key rate limit has a bucket of
// its own; a drained rate key is dropped, and its journaled decay state
// leaves no record in the bucket.
func TestRateLimitWithKey(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	// 2 slots draining at 20 a second: full for at most 100 ms.
	pkFamily(t, c, "api", 2, 20)
	if err := c.TryRateLimit(ctx, "api", 2, client.WithKey("acme")); err != nil {
		t.Fatalf("acme's burst: %v", err)
	}
	if err := c.TryRateLimit(ctx, "api", 2, client.WithKey("globex")); err != nil {
		t.Fatalf("globex's burst while acme's bucket is full: %v", err)
	}
	if err := c.RateLimit(ctx, "api", 1, client.WithKey("acme")); err != nil {
		t.Fatalf("acme's next admission, after decay: %v", err)
	}
	pkWaitIdle(t, c, "api")
	if keys := pkBucketKeys(t, ev.conn(), "api"); len(keys) != 0 {
		t.Errorf("the bucket keeps %q for rate keys that drained", keys)
	}
}

// TestUpdatingAFamilyRaisesEveryKeysLimit: raising a per-key limit raises
// the limit of every live key and grants their waiters.
func TestUpdatingAFamilyRaisesEveryKeysLimit(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	pkFamily(t, c, "tenant", 1, 0)
	var held []*client.Lease
	waiting := map[string]<-chan pkResult{}
	for _, key := range []string{"acme", "globex"} {
		l, err := c.Acquire(ctx, "tenant", 1, client.WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		waiting[key] = pkAcquireQueued(t, ctx, ev.client(), "tenant", client.WithKey(key))
	}
	if _, err := c.UpdateLimit(ctx, "tenant", client.LimitUpdate{Limit: client.Ptr(2)}); err != nil {
		t.Fatal(err)
	}
	for key, ch := range waiting {
		held = append(held, pkGranted(t, ctx, key+"'s waiter after the family's limit was raised", ch))
	}
	keys, _ := pkKeys(t, c, "tenant")
	for _, key := range []string{"acme", "globex"} {
		if k := keys[key]; k.ActiveSlots != 2 || k.WaitersTotal != 0 {
			t.Errorf("key %s: %+v, want 2 slots held and no waiter", key, k)
		}
	}
	if _, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("initech")); err != nil {
		t.Errorf("a new key after the update: %v", err)
	}
	info, err := c.GetKey(ctx, "tenant", "acme")
	if err != nil || info.Limit.Limit != 2 {
		t.Errorf("acme's limit after the update: %+v, %v; want 2", info, err)
	}
	for _, l := range held {
		_ = l.Release(ctx)
	}
}

// TestHeldKeyLeaseSurvivesARestart: a lease held on a key comes back after
// the broker restarts (four ways), still enforced on its key (a try on it
// finds no slot, another key has room), and is released through its key.
func TestHeldKeyLeaseSurvivesARestart(t *testing.T) {
	for _, mode := range rsModes {
		t.Run(mode.name, func(t *testing.T) {
			ev := newEnv(t)
			c := ev.client()
			ctx := ctxT(t, 2*time.Minute)
			pkFamily(t, c, "tenant", 1, 0)
			held, err := c.Acquire(ctx, "tenant", 1, client.WithKey("acme"), client.WithLeaseTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			mode.restart(t, ev)
			if _, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("acme")); !errors.Is(err, client.ErrNoSlots) {
				t.Fatalf("try on acme after the restart: %v, want ErrNoSlots: the held lease must still count", err)
			}
			other, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("globex"))
			if err != nil {
				t.Fatalf("try on globex after the restart: %v", err)
			}
			keys, _ := pkKeys(t, c, "tenant")
			if k := keys["acme"]; k.HoldersTotal != 1 {
				t.Errorf("acme after the restart: %+v, want its one holder", k)
			}
			select {
			case <-held.Done():
				t.Fatalf("the held lease ended across the restart: %v", held.Err())
			default:
			}
			for _, l := range []*client.Lease{held, other} {
				if err := l.Release(ctx); err != nil {
					t.Fatalf("release %v after the restart: %v", l.Names(), err)
				}
			}
			l, err := c.TryAcquire(ctx, "tenant", 1, client.WithKey("acme"))
			if err != nil {
				t.Fatalf("acme after its lease was released: %v", err)
			}
			_ = l.Release(ctx)
			pkWaitIdle(t, c, "tenant")
		})
	}
}

// TestKeyEventsCarryTheKey: a key's events go to the family's event
// subjects, with the family as limit and the key in key.
func TestKeyEventsCarryTheKey(t *testing.T) {
	ev := newEnv(t)
	c := ev.client()
	ctx := ctxT(t, time.Minute)
	pkFamily(t, c, "tenant", 1, 0)
	nc := ev.conn()
	msgs := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("slotbroker.v1.events.tenant.*", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, "tenant", 1, client.WithKey("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for !seen[messages.EventAcquired] || !seen[messages.EventReleased] {
		select {
		case m := <-msgs:
			var e messages.Event
			if err := json.Unmarshal(m.Data, &e); err != nil {
				t.Fatalf("undecodable event on %s: %v", m.Subject, err)
			}
			if e.Limit != "tenant" || e.Key != "acme" || m.Subject != "slotbroker.v1.events.tenant."+e.Kind {
				t.Errorf("event on %s: limit %q key %q kind %q; want limit tenant, key acme, on events.tenant.<kind>", m.Subject, e.Limit, e.Key, e.Kind)
			}
			seen[e.Kind] = true
		case <-ctx.Done():
			t.Fatalf("events seen %v, want acquired and released", seen)
		}
	}
}

// pkAuthConfig is a server with the broker and ops users of authConfig
// and the two confined users of PROTOCOL.md §3.3's per-key recipe: one
// confined to the family tenant, one to its key acme.
const pkAuthConfig = `jetstream { store_dir: "<dir>" }
authorization {
  users = [
    { user: broker, password: broker-pw, permissions: {
        publish:   { allow: ["$JS.API.>", "$JS.FC.>", "$JS.ACK.>", "$KV.slotbroker.>", "$SLOTBROKER.slotbroker.>", "_INBOX.>", "slotbroker.v1.events.>"] }
        subscribe: { allow: ["slotbroker.v1.>", "$SRV.>", "_INBOX.slotbroker.>"] } } }
    { user: ops, password: ops-pw, permissions: {
        publish:   { allow: ["slotbroker.v1.>", "$SRV.>"] }
        subscribe: { allow: ["_INBOX.ops.>", "slotbroker.v1.events.>"] }
        allow_responses: true } }
    # a user confined to the per-key limit tenant: any key of it
    { user: app-tenant, password: app-tenant-pw, permissions: {
        publish:   { allow: ["slotbroker.v1.*.tenant.>", "slotbroker.v1.get.tenant"],
                     deny:  ["slotbroker.v1.revoke.>", "slotbroker.v1.events.>", "slotbroker.v1.acquire-many.>"] }
        subscribe: { allow: ["_INBOX.app-tenant.>", "slotbroker.v1.events.tenant.*"] }
        allow_responses: true } }
    # a user confined to key acme of tenant
    { user: app-acme, password: app-acme-pw, permissions: {
        publish:   { allow: ["slotbroker.v1.*.tenant.acme"],
                     deny:  ["slotbroker.v1.revoke.>", "slotbroker.v1.events.>", "slotbroker.v1.acquire-many.>"] }
        subscribe: { allow: ["_INBOX.app-acme.>"] }
        allow_responses: true } }
  ]
}
`

// TestConfinedToAPerKeyFamilyOrOneKey: with the permissions of PROTOCOL.md
// §3.3, a user confined to a per-key family acquires any key of it and
// nothing else; a user confined to one key acquires that key only.
func TestConfinedToAPerKeyFamilyOrOneKey(t *testing.T) {
	dir := t.TempDir()
	srv := natsFromConfig(t, strings.Replace(pkAuthConfig, "<dir>", filepath.Join(dir, "js"), 1))
	connect := func(user, inbox string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, user+"-pw"), nats.CustomInboxPrefix(inbox))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	b, err := broker.New(connect("broker", "_INBOX.slotbroker"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 2*time.Minute)
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	ops := authClient(t, connect("ops", "_INBOX.ops"))
	pkFamily(t, ops, "tenant", 1, 0)
	if _, err := ops.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}

	t.Run("Family", func(t *testing.T) {
		app := authClient(t, connect("app-tenant", "_INBOX.app-tenant"))
		for _, key := range []string{"acme", "globex"} {
			l, err := app.Acquire(ctx, "tenant", 1, client.WithKey(key))
			if err != nil {
				t.Fatalf("app-tenant acquire key %s: %v", key, err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatalf("app-tenant release key %s: %v", key, err)
			}
		}
		if _, err := app.GetLimit(ctx, "tenant"); err != nil {
			t.Errorf("app-tenant get tenant: %v", err)
		}
		_, err := app.Acquire(ctx, "db", 1, client.WithTimeout(30*time.Second))
		wantDenied(t, "app-tenant acquire db", err, "slotbroker.v1.acquire.db")
		_, err = app.Acquire(ctx, "other", 1, client.WithKey("acme"), client.WithTimeout(30*time.Second))
		wantDenied(t, "app-tenant acquire a key of another family", err, "slotbroker.v1.acquire.other.acme")
	})
	t.Run("Key", func(t *testing.T) {
		app := authClient(t, connect("app-acme", "_INBOX.app-acme"))
		l, err := app.Acquire(ctx, "tenant", 1, client.WithKey("acme"))
		if err != nil {
			t.Fatalf("app-acme acquire key acme: %v", err)
		}
		// Renewals go to the key's subject too.
		if err := l.Release(ctx); err != nil {
			t.Fatalf("app-acme release key acme: %v", err)
		}
		_, err = app.Acquire(ctx, "tenant", 1, client.WithKey("globex"), client.WithTimeout(30*time.Second))
		wantDenied(t, "app-acme acquire key globex", err, "slotbroker.v1.acquire.tenant.globex")
		_, err = app.Acquire(ctx, "db", 1, client.WithTimeout(30*time.Second))
		wantDenied(t, "app-acme acquire db", err, "slotbroker.v1.acquire.db")
	})
	if keys := fmt.Sprint(pkKeys(t, ops, "tenant")); !strings.HasPrefix(keys, "map[] 0") {
		t.Errorf("tenant's keys after the confined users released: %s, want none", keys)
	}
}

// newCLIEnvOn builds slotctl and points it, and a client, at url: a broker
// started by the test with the options it needs.
func newCLIEnvOn(t *testing.T, url string) *cliEnv {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	x := &cliEnv{t: t, dir: dir, bin: filepath.Join(dir, "slotctl"), url: url}
	if out, err := cliGo(root, "build", "-o", x.bin, "./cmd/slotctl"); err != nil {
		t.Fatalf("build slotctl: %v\n%s", err, out)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	x.c = authClient(t, nc)
	return x
}

// cliRun is a slotctl started in the background.
type cliRun struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error
}

// startCLIRun starts cmd; it is killed if still running when t ends.
func startCLIRun(t *testing.T, cmd *exec.Cmd) *cliRun {
	t.Helper()
	r := &cliRun{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// ok waits for the run to end and checks that it exited 0.
func (r *cliRun) ok(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		t.Fatalf("%v did not end within a minute; stderr:\n%s", r.cmd.Args, r.stderr.String())
	}
	if r.err != nil {
		t.Fatalf("%v: %v; stdout:\n%s\nstderr:\n%s", r.cmd.Args, r.err, r.stdout.String(), r.stderr.String())
	}
}

// TestPerKeyThroughSlotctl: create --per-key, run --key, inspect showing
// the live keys, inspect --key showing a key's holder.
func TestPerKeyThroughSlotctl(t *testing.T) {
	ev := newEnv(t)
	x := newCLIEnvOn(t, ev.e.URL)
	x.slotctl(t, "create", "tenant", "--limit", "1", "--per-key").ok(t)
	if info := x.info(t, "tenant"); !info.PerKey || info.Limit.Limit != 1 {
		t.Fatalf("tenant after create --per-key: %+v", info)
	}
	dir := t.TempDir()
	started, gate := filepath.Join(dir, "started"), filepath.Join(dir, "go")
	run := startCLIRun(t, x.command("run", "tenant", "--key", "acme", "--holder", "acme-job", "--", "sh", "-c",
		`touch "$0"; while [ ! -e "$1" ]; do sleep 0.01; done`, started, gate))
	eventually(t, 30*time.Second, "run --key acme holds acme's slot", func() bool {
		_, err := os.Stat(started)
		return err == nil
	})
	x.slotctl(t, "run", "tenant", "--key", "acme", "--try", "--", "true").fails(t, 75, "at once")
	x.slotctl(t, "run", "tenant", "--key", "globex", "--try", "--", "true").ok(t)
	r := x.slotctl(t, "inspect", "tenant").ok(t)
	for _, want := range []string{"1 live key", "acme"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect tenant lacks %q:\n%s", want, r.stdout)
		}
	}
	r = x.slotctl(t, "inspect", "tenant", "--key", "acme").ok(t)
	for _, want := range []string{"Key:", "acme", "acme-job", "Holders (1):"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect tenant --key acme lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := x.slotctl(t, "ls").ok(t); !strings.Contains(r.stdout, "per-key (1 live)") {
		t.Errorf("ls does not mark tenant per-key with its live key:\n%s", r.stdout)
	}
	// A run waiting on acme says who holds acme (not the family, which
	// holds nothing).
	waiting := x.command("run", "tenant", "--key", "acme", "--", "true")
	stderr, err := waiting.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := waiting.Start(); err != nil {
		t.Fatal(err)
	}
	lines := cliLines(stderr)
	line := cliAwaitLine(t, lines, 30*time.Second, "run --key's waiting message", func(l string) bool { return strings.Contains(l, "waiting for") })
	if !strings.Contains(line, "tenant key acme") || !strings.Contains(line, "acme-job") {
		t.Errorf("waiting message %q: want the key and its holder acme-job", line)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run.ok(t)
	go func() {
		for range lines {
		}
	}()
	if err := waiting.Wait(); err != nil {
		t.Fatalf("the waiting run: %v", err)
	}
	pkWaitIdle(t, x.c, "tenant")
}
