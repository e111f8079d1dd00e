package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// testBound is the generous bound on anything the daemon tests wait for.
const testBound = 60 * time.Second

// Users of the test servers that have users: the broker, confined to its
// own subjects and to the inbox prefix _INBOX.slotbroker, and a test user
// allowed everything.
const (
	brokerUser     = "broker"
	brokerPassword = "broker-secret"
	brokerInbox    = "_INBOX.slotbroker"
	testUser       = "test"
	testPassword   = "test-secret"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testAuth authenticates the users of the test servers that have users:
// the broker, allowed to publish anywhere but to subscribe only to the
// subjects given to newTestAuth, and the test user, allowed everything. Once revoked is set, the
// broker's credentials are refused (as after a password change).
type testAuth struct {
	users   map[string]*server.User
	revoked atomic.Bool
}

func newTestAuth(subscribe ...string) *testAuth {
	return &testAuth{users: map[string]*server.User{
		brokerUser: {Username: brokerUser, Password: brokerPassword, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: subscribe},
		}},
		testUser: {Username: testUser, Password: testPassword},
	}}
}

// Check implements server.Authentication.
func (a *testAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	u := a.users[o.Username]
	if u == nil || o.Password != u.Password || (u.Username == brokerUser && a.revoked.Load()) {
		return false
	}
	c.RegisterUser(u)
	return true
}

// natsOpts are the options of an external test server with JetStream on a
// random port, storing in dir, with the users of auth when not nil.
func natsOpts(dir string, auth *testAuth) *server.Options {
	o := &server.Options{
		ServerName: "test", Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	}
	if auth != nil {
		o.CustomClientAuthentication = auth
	}
	return o
}

// startNATS starts an in-process nats-server, stopped at the end of the test.
func startNATS(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// testConfig is the daemon's default configuration, logging warnings.
func testConfig() *Config {
	cfg := defaultConfig()
	cfg.LogLevel = "warn"
	return &cfg
}

// runningDaemon is run in a goroutine.
type runningDaemon struct {
	stderr *syncBuffer
	served chan *daemon
	done   chan struct{}
	err    error // set before done is closed
}

// startDaemon runs the daemon with cfg until the test ends (or it returns).
func startDaemon(t *testing.T, cfg *Config) *runningDaemon {
	t.Helper()
	r := &runningDaemon{stderr: &syncBuffer{}, served: make(chan *daemon, 1), done: make(chan struct{})}
	servingHook = func(d *daemon) { r.served <- d }
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.err = run(ctx, cfg, r.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(testBound):
			t.Errorf("daemon did not stop within %v after the test:\n%s", testBound, r.stderr)
		}
		servingHook = nil
	})
	return r
}

// serving waits until the daemon serves and returns it.
func (r *runningDaemon) serving(t *testing.T) *daemon {
	t.Helper()
	select {
	case d := <-r.served:
		return d
	case <-r.done:
		t.Fatalf("daemon returned before serving: %v (exit %d)\n%s", r.err, exitStatus(r.err), r.stderr)
	case <-time.After(testBound):
		t.Fatalf("daemon did not serve within %v:\n%s", testBound, r.stderr)
	}
	return nil
}

// result waits until run returns and gives its error.
func (r *runningDaemon) result(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(testBound):
		t.Fatalf("daemon did not exit within %v:\n%s", testBound, r.stderr)
		return nil
	}
}

// connect connects to url as the test user (when the server has users).
func connect(t *testing.T, url string, users bool) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.Name("test"), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if users {
		opts = append(opts, nats.UserInfo(testUser, testPassword))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// waitAnswers polls the broker's list verb until it answers.
func waitAnswers(t *testing.T, nc *nats.Conn, prefix string) {
	t.Helper()
	subject := messages.NewSubjects(prefix).List()
	deadline := time.Now().Add(testBound)
	for {
		_, err := nc.Request(subject, []byte("{}"), time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker does not answer %s within %v: %v", subject, testBound, err)
		}
		if errors.Is(err, nats.ErrNoResponders) {
			// Answered at once: pace the polling.
			<-time.After(20 * time.Millisecond)
		}
	}
}

// checkLost checks that err, returned by run after the daemon served,
// exits 69 and is reported as one line saying the daemon exits to be
// restarted, with each of wants (case-insensitive).
func checkLost(t *testing.T, err error, stderr string, wants ...string) {
	t.Helper()
	checkUnavailable(t, err, stderr, append(wants, restartHint)...)
}

// checkUnavailable checks that err exits 69 and is reported as one line
// with each of wants (case-insensitive).
func checkUnavailable(t *testing.T, err error, stderr string, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("run returned nil, want an unavailable error; stderr:\n%s", stderr)
	}
	if code := exitStatus(err); code != exitUnavailable {
		t.Errorf("exit status %d, want %d: %v", code, exitUnavailable, err)
	}
	var b bytes.Buffer
	reportError(&b, err)
	line := b.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") || !strings.HasPrefix(line, "slotbroker: ") {
		t.Errorf("report is not one \"slotbroker: ...\" line: %q", line)
	}
	for _, w := range wants {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Errorf("report %q does not contain %q", line, w)
		}
	}
	if strings.Contains(line, "broker: unavailable") {
		t.Errorf("report %q shows the broker's sentinel", line)
	}
}

// TestDaemonExitsWhenConnectionCloses closes the daemon's NATS connection
// under it: run must shut down and return exit 69 with one line naming the
// cause, on an external server and on the embedded one.
func TestDaemonExitsWhenConnectionCloses(t *testing.T) {
	t.Run("External", func(t *testing.T) {
		srv := startNATS(t, natsOpts(t.TempDir(), nil))
		cfg := testConfig()
		cfg.NATS = srv.ClientURL()
		r := startDaemon(t, cfg)
		d := r.serving(t)
		waitAnswers(t, connect(t, srv.ClientURL(), false), cfg.Prefix)

		d.nc.Close()
		checkLost(t, r.result(t), r.stderr.String(), "lost the NATS connection (nats: connection closed)", srv.ClientURL())
	})
	t.Run("Drained", func(t *testing.T) {
		// Draining ends the broker's subscriptions before the connection
		// closes: whichever the daemon sees first, it exits 69.
		srv := startNATS(t, natsOpts(t.TempDir(), nil))
		cfg := testConfig()
		cfg.NATS = srv.ClientURL()
		r := startDaemon(t, cfg)
		d := r.serving(t)
		waitAnswers(t, connect(t, srv.ClientURL(), false), cfg.Prefix)

		if err := d.nc.Drain(); err != nil {
			t.Fatal(err)
		}
		checkLost(t, r.result(t), r.stderr.String(), srv.ClientURL())
	})
	t.Run("Embedded", func(t *testing.T) {
		cfg := testConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.Data = t.TempDir()
		r := startDaemon(t, cfg)
		d := r.serving(t)
		waitAnswers(t, connect(t, d.srv.ClientURL(), false), cfg.Prefix)

		d.nc.Close()
		checkLost(t, r.result(t), r.stderr.String(), "lost the connection to the embedded NATS server (nats: connection closed)")
		if d.srv.Running() {
			t.Error("the embedded server still runs after run returned")
		}
	})
}

// TestDaemonExitsWhenCredentialsRevoked refuses the broker's credentials
// on the server and kicks its connection: nats.go gets the same
// authorization error twice in a row on reconnecting and closes the
// connection for good, and the daemon exits 69 saying so (instead of
// lingering without a connection).
func TestDaemonExitsWhenCredentialsRevoked(t *testing.T) {
	auth := newTestAuth("slotbroker.>", "$SRV.>", brokerInbox+".>")
	srv := startNATS(t, natsOpts(t.TempDir(), auth))
	cfg := testConfig()
	cfg.NATS, cfg.User, cfg.Password, cfg.InboxPrefix = srv.ClientURL(), brokerUser, brokerPassword, brokerInbox
	r := startDaemon(t, cfg)
	r.serving(t)
	waitAnswers(t, connect(t, srv.ClientURL(), true), cfg.Prefix)

	auth.revoked.Store(true)
	cz, err := srv.Connz(&server.ConnzOptions{Username: true, User: brokerUser})
	if err != nil || len(cz.Conns) != 1 {
		t.Fatalf("the broker's connection: %+v, %v", cz, err)
	}
	if err := srv.DisconnectClientByID(cz.Conns[0].Cid); err != nil {
		t.Fatal(err)
	}
	checkLost(t, r.result(t), r.stderr.String(), "lost the NATS connection ("+nats.ErrAuthorization.Error()+")", "credentials")
}

// TestDaemonExitsWhenSubscriptionRefused gives the broker's user no right
// to subscribe to the service's subjects: the service cannot be registered,
// which is an unavailable server (69) naming the subject, not a bad
// configuration (78).
func TestDaemonExitsWhenSubscriptionRefused(t *testing.T) {
	srv := startNATS(t, natsOpts(t.TempDir(), newTestAuth("$SRV.>", brokerInbox+".>")))
	cfg := testConfig()
	cfg.NATS, cfg.User, cfg.Password, cfg.InboxPrefix = srv.ClientURL(), brokerUser, brokerPassword, brokerInbox
	r := startDaemon(t, cfg)
	checkUnavailable(t, r.result(t), r.stderr.String(), "register service", "permissions violation", "slotbroker.v1.")
}

// TestDaemonStopsCleanlyOnSignal: the end of the context (what a signal
// does) still stops the daemon with no error.
func TestDaemonStopsCleanlyOnSignal(t *testing.T) {
	srv := startNATS(t, natsOpts(t.TempDir(), nil))
	cfg := testConfig()
	cfg.NATS = srv.ClientURL()
	r := &runningDaemon{stderr: &syncBuffer{}, done: make(chan struct{})}
	served := make(chan struct{})
	servingHook = func(*daemon) { close(served) }
	t.Cleanup(func() { servingHook = nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer close(r.done)
		r.err = run(ctx, cfg, r.stderr)
	}()
	select {
	case <-served:
	case <-r.done:
		t.Fatalf("run returned before serving: %v\n%s", r.err, r.stderr)
	case <-time.After(testBound):
		t.Fatalf("daemon did not serve within %v", testBound)
	}
	cancel()
	if err := r.result(t); err != nil {
		t.Fatalf("run after the context ended = %v, want nil\n%s", err, r.stderr)
	}
}

// TestDaemonQueueFlagsReachBroker runs the daemon with the new flags on a
// server where the broker's user may subscribe only to its own subjects and
// to _INBOX.slotbroker.>, and checks each flag's effect: the broker serves
// (its inbox is under --inbox-prefix), a grant nobody accepts goes on after
// --grant-timeout, and --max-waiters-per-inbox and --max-waiters refuse one
// waiter more.
func TestDaemonQueueFlagsReachBroker(t *testing.T) {
	srv := startNATS(t, natsOpts(t.TempDir(), newTestAuth("slotbroker.>", "$SRV.>", brokerInbox+".>")))
	var cfg *Config
	{
		c, err := parseSettings(t, "", "--nats", srv.ClientURL(), "--user", brokerUser, "--password", brokerPassword,
			"--inbox-prefix", brokerInbox, "--grant-timeout", "100ms", "--max-waiters-per-inbox", "1", "--max-waiters", "2",
			"--log-level", "warn")
		if err != nil {
			t.Fatal(err)
		}
		cfg = c
	}
	r := startDaemon(t, cfg)
	r.serving(t)
	url := srv.ClientURL()
	waitAnswers(t, connect(t, url, true), cfg.Prefix)

	// The broker's inboxes are all under the prefix (the server would have
	// refused others).
	cz, err := srv.Connz(&server.ConnzOptions{Subscriptions: true, Username: true, User: brokerUser})
	if err != nil {
		t.Fatal(err)
	}
	inboxes := 0
	for _, c := range cz.Conns {
		for _, s := range c.Subs {
			if strings.HasPrefix(s, "_INBOX") {
				inboxes++
				if !strings.HasPrefix(s, brokerInbox+".") {
					t.Errorf("the broker subscribes to %s, outside --inbox-prefix %s", s, brokerInbox)
				}
			}
		}
	}
	if inboxes == 0 {
		t.Errorf("the broker has no subscription under %s.>: %+v", brokerInbox, cz.Conns)
	}

	newClient := func() *client.Client {
		c, err := client.New(connect(t, url, true), client.WithRequestTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	c1, c2 := newClient(), newClient()
	if _, err := c1.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	waitersAre := func(n int) {
		t.Helper()
		deadline := time.Now().Add(testBound)
		for {
			info, err := c1.GetLimit(ctx, "db")
			if err == nil && info.WaitersTotal == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("limit db does not have %d waiters within %v: %+v, %v", n, testBound, info, err)
			}
			<-time.After(10 * time.Millisecond)
		}
	}
	held, err := c1.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}

	// --grant-timeout: a waiter that never accepts its grant holds the next
	// one up for 100ms, not the default 2s.
	stuck := connect(t, url, true)
	grants, err := stuck.SubscribeSync("_INBOX.stuck.*")
	if err != nil {
		t.Fatal(err)
	}
	waitID := nuid.Next()
	data, err := messages.Marshal(messages.JSON, messages.AcquireRequest{
		Occupy: 1, WaitID: waitID, Notify: "_INBOX.stuck." + waitID, Key: nuid.Next()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stuck.Request(messages.NewSubjects(cfg.Prefix).Verb(messages.VerbAcquire, "db"), data, 5*time.Second)
	if err != nil {
		t.Fatalf("raw acquire: %v", err)
	}
	var reply messages.AcquireReply
	if _, err := messages.Decode(resp.Data, &reply); err != nil || reply.Status != messages.StatusQueued {
		t.Fatalf("raw acquire: reply %s (%v), want queued", resp.Data, err)
	}
	type result struct {
		lease *client.Lease
		err   error
	}
	second := make(chan result, 1)
	go func() {
		l, err := c2.Acquire(ctx, "db", 1)
		second <- result{l, err}
	}()
	waitersAre(2)
	released := time.Now()
	if err := held.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, err := grants.NextMsg(testBound); err != nil {
		t.Fatalf("the stuck waiter got no grant: %v", err)
	}
	var res result
	select {
	case res = <-second:
	case <-time.After(testBound):
		t.Fatal("the second waiter got no grant")
	}
	if res.err != nil {
		t.Fatalf("second waiter: %v", res.err)
	}
	if took := time.Since(released); took >= broker.DefaultGrantTimeout-500*time.Millisecond {
		t.Errorf("the second waiter got its grant %v after the release: --grant-timeout 100ms did not apply", took)
	}
	waitersAre(0)

	// --max-waiters-per-inbox 1: c1 queues one, its second is refused.
	queue := func(c *client.Client) (context.CancelFunc, chan error) {
		qctx, qcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			l, err := c.Acquire(qctx, "db", 1)
			if l != nil {
				_ = l.Release(context.Background())
			}
			done <- err
		}()
		return qcancel, done
	}
	cancel1, done1 := queue(c1)
	defer func() { cancel1(); <-done1 }()
	waitersAre(1)
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	if _, err := c1.Acquire(tctx, "db", 1); !errors.Is(err, client.ErrTooManyWaiters) {
		t.Errorf("a second waiter of one client with --max-waiters-per-inbox 1: %v, want %v", err, client.ErrTooManyWaiters)
	}

	// --max-waiters 2: another client queues the second; a third client's is refused.
	cancel3, done3 := queue(newClient())
	defer func() { cancel3(); <-done3 }()
	waitersAre(2)
	if _, err := newClient().Acquire(tctx, "db", 1); !errors.Is(err, client.ErrTooManyWaiters) {
		t.Errorf("a third waiter with --max-waiters 2: %v, want %v", err, client.ErrTooManyWaiters)
	}
	_ = res.lease.Release(ctx)
}
