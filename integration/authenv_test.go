package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// authConfig is the nats-server configuration that PROTOCOL.md documents
// for a deployment with users ("<dir>" is the JetStream store directory).
// Each user but the broker connects with nats.CustomInboxPrefix set to its
// inbox ("_INBOX.ops", "_INBOX.app-db"); the daemon runs with
// --inbox-prefix _INBOX.slotbroker.
const authConfig = `jetstream { store_dir: "<dir>" }
authorization {
  users = [
    # the broker: its storage, its service subjects, replies and grants to every inbox, its own inbox
    { user: broker, password: broker-pw, permissions: {
        publish:   { allow: ["$JS.API.>", "$JS.FC.>", "$JS.ACK.>", "$KV.slotbroker.>", "$SLOTBROKER.slotbroker.>", "_INBOX.>", "slotbroker.v1.events.>"] }
        subscribe: { allow: ["slotbroker.v1.>", "$SRV.>", "_INBOX.slotbroker.>"] } } }
    # an operator: every verb, events, service discovery; its own inbox
    { user: ops, password: ops-pw, permissions: {
        publish:   { allow: ["slotbroker.v1.>", "$SRV.>"] }
        subscribe: { allow: ["_INBOX.ops.>", "slotbroker.v1.events.>"] }
        allow_responses: true } }
    # a user confined to limit db: use and read db only, its own inbox
    { user: app-db, password: app-db-pw, permissions: {
        publish:   { allow: ["slotbroker.v1.acquire.db", "slotbroker.v1.release.db", "slotbroker.v1.renew.db", "slotbroker.v1.cancel.db", "slotbroker.v1.get.db"] }
        subscribe: { allow: ["_INBOX.app-db.>", "slotbroker.v1.events.db.*"] }
        allow_responses: true } }
  ]
}
`

// authRootUser is added to authConfig by the tests only: a user without
// restrictions, standing for anybody allowed to publish where a victim
// listens (to show that the broker itself refuses, not the server).
const authRootUser = `    # tests only: no restrictions
    { user: root, password: root-pw }
`

// authServerConfig is authConfig with its store directory, the root user
// and, when maxPayload > 0, the server's max payload.
func authServerConfig(storeDir string, maxPayload int) string {
	cfg := strings.Replace(authConfig, "<dir>", storeDir, 1)
	i := strings.LastIndex(cfg, "  ]\n}")
	cfg = cfg[:i] + authRootUser + cfg[i:]
	if maxPayload > 0 {
		cfg = fmt.Sprintf("max_payload: %d\n", maxPayload) + cfg
	}
	return cfg
}

// natsUser is one user of authConfig.
type natsUser struct {
	name, password string
	// inbox is the user's inbox prefix ("" for the default "_INBOX").
	inbox string
}

var (
	userOps   = natsUser{"ops", "ops-pw", "_INBOX.ops"}
	userAppDB = natsUser{"app-db", "app-db-pw", "_INBOX.app-db"}
	userRoot  = natsUser{"root", "root-pw", ""}
)

// Subjects of the default prefix that the tests send raw requests to.
const (
	subjBase = "slotbroker.v1."
	subjList = "slotbroker.v1.list"
)

func verbSubject(verb, name string) string { return subjBase + verb + "." + name }

// authEnv is an in-process nats-server with authConfig's users (random
// port, own store dir), the slotbroker daemon binary serving on it as user
// broker, slotctl, and an ops client.
type authEnv struct {
	t          *testing.T
	url        string
	bin, ctl   string
	daemonArgs []string
	d          *daemonProc
	// ops is a client of the ops user; rootNC a connection of root.
	ops    *client.Client
	rootNC *nats.Conn
	kv     jetstream.KeyValue
}

// newAuthEnv starts the server (maxPayload > 0 sets max_payload) and the
// daemon with the documented flags plus extra.
func newAuthEnv(t *testing.T, maxPayload int, extra ...string) *authEnv {
	t.Helper()
	dir := t.TempDir()
	x := &authEnv{t: t, bin: filepath.Join(dir, "slotbroker"), ctl: filepath.Join(dir, "slotctl")}
	authBuild(t, dir)

	srv := natsFromConfig(t, authServerConfig(filepath.Join(dir, "jetstream"), maxPayload))
	x.url = srv.ClientURL()

	x.daemonArgs = extra
	x.startDaemon(t)
	x.ops = x.client(t, userOps)
	x.rootNC = x.connect(t, userRoot)
	js, err := jetstream.New(x.rootNC)
	if err != nil {
		t.Fatal(err)
	}
	if x.kv, err = js.KeyValue(ctxT(t, 10*time.Second), messages.DefaultBucket); err != nil {
		t.Fatalf("the broker's bucket: %v", err)
	}
	return x
}

// authBuild builds slotbroker and slotctl into dir.
func authBuild(t *testing.T, dir string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/slotbroker", "./cmd/slotctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/slotbroker ./cmd/slotctl: %v\n%s", err, out)
	}
}

// startDaemon starts the daemon as user broker with its own inbox prefix
// and waits until the ops user can list limits.
func (x *authEnv) startDaemon(t *testing.T) {
	t.Helper()
	args := append([]string{"--nats", x.url, "--user", "broker", "--password", "broker-pw",
		"--inbox-prefix", "_INBOX.slotbroker"}, x.daemonArgs...)
	p := &daemonProc{t: x.t, cmd: exec.Command(x.bin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = daemonEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start slotbroker: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	x.t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	x.d = p
	deadline := time.Now().Add(daemonBound)
	for !x.answers() {
		if p.exited() {
			t.Fatalf("slotbroker %s exited with status %d before serving:\n%s", strings.Join(args, " "), p.cmd.ProcessState.ExitCode(), p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("slotbroker did not serve the ops user within %v:\n%s", daemonBound, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether a new ops connection can list limits.
func (x *authEnv) answers() bool {
	nc, err := nats.Connect(x.url, nats.UserInfo(userOps.name, userOps.password), nats.CustomInboxPrefix(userOps.inbox), nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	c, err := client.New(nc, client.WithRequestTimeout(time.Second), client.WithRetryFor(0))
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = c.ListLimits(ctx)
	return err == nil
}

// restart stops the daemon with SIGTERM (it must exit 0) and starts it
// again with the same flags plus extra, if given.
func (x *authEnv) restart(t *testing.T, extra ...string) {
	t.Helper()
	p := x.d
	if p.exited() {
		t.Fatalf("slotbroker had exited (status %d) before the restart:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(daemonBound):
		t.Fatalf("slotbroker did not stop within %v after SIGTERM:\n%s", daemonBound, p.stderr)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("slotbroker exited with status %d after SIGTERM, want 0:\n%s", code, p.stderr)
	}
	if extra != nil {
		x.daemonArgs = extra
	}
	x.startDaemon(t)
}

// mustServe checks that the daemon still runs and that ListLimits and
// `slotctl ls` answer the ops user.
func (x *authEnv) mustServe(t *testing.T, when string) {
	t.Helper()
	if x.d.exited() {
		t.Fatalf("%s: slotbroker exited with status %d:\n%s", when, x.d.cmd.ProcessState.ExitCode(), x.d.stderr)
	}
	if _, err := x.ops.ListLimits(ctxT(t, 30*time.Second)); err != nil {
		t.Fatalf("%s: ListLimits: %v\ndaemon output:\n%s", when, err, x.d.stderr)
	}
	if r := x.slotctl(t, userOps, "ls"); r.code != 0 {
		t.Errorf("%s: slotctl ls as ops exited %d, want 0; stdout:\n%s\nstderr:\n%s", when, r.code, r.stdout, r.stderr)
	}
}

// slotctl runs slotctl as user u (with its inbox prefix) and waits for it.
func (x *authEnv) slotctl(t *testing.T, u natsUser, args ...string) cliResult {
	t.Helper()
	base := []string{"-s", x.url, "--user", u.name, "--password", u.password}
	if u.inbox != "" {
		base = append(base, "--inbox-prefix", u.inbox)
	}
	cmd := exec.Command(x.ctl, append(base, args...)...)
	cmd.Env = append(os.Environ(), "NATS_URL=")
	return cliWait(t, cmd)
}

// connect opens a connection of user u with its inbox prefix, closed when t ends.
func (x *authEnv) connect(t testing.TB, u natsUser, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(u.name, u.password), nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if u.inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(u.inbox))
	}
	nc, err := nats.Connect(x.url, append(opts, extra...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", u.name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// client returns a client of user u on a connection of its own.
func (x *authEnv) client(t testing.TB, u natsUser, opts ...client.Option) *client.Client {
	t.Helper()
	return authClient(t, x.connect(t, u), opts...)
}

func authClient(t testing.TB, nc *nats.Conn, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(nc, opts...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// limit returns name's state as the ops user sees it.
func (x *authEnv) limit(t testing.TB, name string) *client.LimitInfo {
	t.Helper()
	info, err := x.ops.GetLimit(ctxT(t, 30*time.Second), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return info
}

// noLimit checks that name does not exist.
func (x *authEnv) noLimit(t testing.TB, name string) {
	t.Helper()
	info, err := x.ops.GetLimit(ctxT(t, 30*time.Second), name)
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get %s = %+v, %v; want ErrNotFound: the limit must not exist", name, info, err)
	}
}

// sameConfig checks that name exists with the configuration of want.
func (x *authEnv) sameConfig(t testing.TB, name string, want messages.Limit) {
	t.Helper()
	got := x.limit(t, name)
	if got.Limit.Limit != want.Limit || got.SlotDecayPerSecond != want.SlotDecayPerSecond || got.Active != want.Active {
		t.Errorf("limit %s is {limit %d, decay %v, active %v}, want it unchanged: {limit %d, decay %v, active %v}",
			name, got.Limit.Limit, got.SlotDecayPerSecond, got.Active, want.Limit, want.SlotDecayPerSecond, want.Active)
	}
}

// kvKeys lists the keys of the broker's bucket (read by root).
func (x *authEnv) kvKeys(t testing.TB) []string {
	t.Helper()
	lister, err := x.kv.ListKeys(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatalf("list the bucket's keys: %v", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// notStored checks that no key of the bucket names one of ids (a wait or
// lease id), nor is one of the keys given whole.
func (x *authEnv) notStored(t testing.TB, ids ...string) {
	t.Helper()
	for _, k := range x.kvKeys(t) {
		for _, id := range ids {
			if k == id || strings.HasSuffix(k, "."+id) {
				t.Errorf("the bucket holds %q: a refused request was stored", k)
			}
		}
	}
}

// kvRevision is the revision of key in the bucket, 0 when absent.
func (x *authEnv) kvRevision(t testing.TB, key string) uint64 {
	t.Helper()
	e, err := x.kv.Get(ctxT(t, 30*time.Second), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("get %s from the bucket: %v", key, err)
	}
	return e.Revision()
}

// rawSend sends data to subject as a request on nc and returns the answer.
func rawSend(t testing.TB, nc *nats.Conn, subject string, data []byte) *nats.Msg {
	t.Helper()
	m, err := nc.Request(subject, data, 20*time.Second)
	if err != nil {
		t.Fatalf("request on %s (%d bytes): %v: the broker gave no answer", subject, len(data), err)
	}
	return m
}

// rawRequest encodes req in enc (a []byte is sent as it is), sends it to
// subject on nc and decodes the answer into a T.
func rawRequest[T any](t testing.TB, nc *nats.Conn, subject string, enc messages.Encoding, req any) T {
	t.Helper()
	data, ok := req.([]byte)
	if !ok {
		var err error
		if data, err = messages.Marshal(enc, req); err != nil {
			t.Fatal(err)
		}
	}
	m := rawSend(t, nc, subject, data)
	var reply T
	if _, err := messages.Decode(m.Data, &reply); err != nil {
		t.Fatalf("undecodable answer on %s: %v: %q", subject, err, m.Data)
	}
	return reply
}

// packed encodes fields as a msgpack map, for values that a Go struct or
// JSON cannot carry (uint64 above int64, NaN, infinities).
func packed(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	data, err := msgpack.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// wantCode checks that e is a wire error with one of codes.
func wantCode(t testing.TB, what string, e *messages.Error, codes ...messages.Code) {
	t.Helper()
	for _, c := range codes {
		if e != nil && e.Code == c {
			return
		}
	}
	if e == nil {
		t.Errorf("%s: accepted, want refused with %v", what, codes)
		return
	}
	t.Errorf("%s: refused with %s (%s), want %v", what, e.Code, e.Message, codes)
}

// wantWireCode checks that err carries a wire error with code.
func wantWireCode(t testing.TB, what string, err error, code messages.Code) {
	t.Helper()
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Errorf("%s: error %v carries wire error %+v, want code %s", what, err, e, code)
	}
}

// queuedAcquire is an acquisition that queues when its limit is full,
// with its grant pushed to notify.
func queuedAcquire(notify string) messages.AcquireRequest {
	return messages.AcquireRequest{Occupy: 1, WaitID: nuid.Next(), Key: nuid.Next(), Notify: notify, Holder: "hostile test"}
}

// tryAcquire is an acquisition that never queues.
func tryAcquire() messages.AcquireRequest {
	return messages.AcquireRequest{Occupy: 1, Try: true, WaitID: nuid.Next(), TTLMillis: (10 * time.Minute).Milliseconds()}
}

// noHolders checks that name has no holders and no waiters.
func (x *authEnv) noHolders(t testing.TB, name string) {
	t.Helper()
	info := x.limit(t, name)
	if info.HoldersTotal != 0 || len(info.Holders) != 0 || info.ActiveSlots != 0 || info.WaitersTotal != 0 || len(info.Waiters) != 0 {
		t.Errorf("limit %s has %d holders %+v, %d active slots and %d waiters %+v; want none",
			name, info.HoldersTotal, info.Holders, info.ActiveSlots, info.WaitersTotal, info.Waiters)
	}
}
