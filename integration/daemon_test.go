package integration

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// daemonBound is the generous bound on starting and stopping the daemon.
const daemonBound = 60 * time.Second

// TestDaemon builds cmd/slotbroker once and drives the binary as a user would.
func TestDaemon(t *testing.T) {
	bin := daemonBuild(t)
	t.Run("RestartKeepsLimits", func(t *testing.T) { daemonRestartKeepsLimits(t, bin) })
	t.Run("KillKeepsLeases", func(t *testing.T) { daemonKillKeepsLeases(t, bin) })
	t.Run("ExitStatuses", func(t *testing.T) { daemonExitStatuses(t, bin) })
	t.Run("ConfigFile", func(t *testing.T) { daemonConfigFile(t, bin) })
	t.Run("ExternalNATS", func(t *testing.T) { daemonExternalNATS(t, bin) })
}

// daemonBuild builds the binary into the test's temporary directory.
func daemonBuild(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(t.TempDir(), "slotbroker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/slotbroker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/slotbroker: %v\n%s", err, out)
	}
	return bin
}

// daemonProc is a running slotbroker process.
type daemonProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

// daemonEnv is the environment without NATS_URL, so the daemon embeds NATS
// unless a test says otherwise.
func daemonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_URL=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func daemonStart(t testing.TB, bin string, env []string, args ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{t: t, cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start slotbroker: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *daemonProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls until a client on url with prefix can list limits, and
// returns that client. It fails at once if the process exits.
func (p *daemonProc) waitReady(url, prefix string) *client.Client {
	p.t.Helper()
	deadline := time.Now().Add(daemonBound)
	for {
		if p.exited() {
			p.t.Fatalf("slotbroker exited with status %d before serving:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
		}
		if c, closeConn := daemonTryClient(url, prefix); c != nil {
			p.t.Cleanup(func() {
				_ = c.Close()
				closeConn()
			})
			return c
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("slotbroker did not serve on %s within %v:\n%s", url, daemonBound, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonTryClient returns a client whose ListLimits succeeded and a function
// that closes its connection, or nil.
func daemonTryClient(url, prefix string) (*client.Client, func()) {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return nil, nil
	}
	c, err := client.New(nc, client.WithPrefix(prefix), client.WithRequestTimeout(time.Second), client.WithRetryFor(0))
	if err != nil {
		nc.Close()
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.ListLimits(ctx); err != nil {
		_ = c.Close()
		nc.Close()
		return nil, nil
	}
	return c, nc.Close
}

// signal sends sig and returns the exit status, failing if the process
// does not end within the bound.
func (p *daemonProc) signal(sig syscall.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
	return p.wait()
}

func (p *daemonProc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(daemonBound):
		p.t.Fatalf("slotbroker did not exit within %v:\n%s", daemonBound, p.stderr)
		return -1
	}
}

// daemonFreeAddr returns a 127.0.0.1 address with a port free right now.
func daemonFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func daemonRestartKeepsLimits(t *testing.T, bin string) {
	addr, data := daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	url := "nats://" + addr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c := p.waitReady(url, "slotbroker")
	if _, err := c.CreateLimit(ctxT(t, 10*time.Second), "db", 3); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}
	out := p.stderr.String()
	if !strings.Contains(out, url) || !strings.Contains(out, data) {
		t.Errorf("output does not say where it listens (%s) and where the data is (%s):\n%s", url, data, out)
	}

	p = daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c = p.waitReady(url, "slotbroker")
	info, err := c.GetLimit(ctxT(t, 10*time.Second), "db")
	if err != nil {
		t.Fatalf("limit after restart: %v", err)
	}
	if info.Limit.Limit != 3 {
		t.Errorf("slots after restart = %d, want 3", info.Limit.Limit)
	}
	if code := p.signal(syscall.SIGINT); code != 0 {
		t.Fatalf("exit status after SIGINT = %d, want 0:\n%s", code, p.stderr)
	}
}

func daemonKillKeepsLeases(t *testing.T, bin string) {
	addr, data := daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	url := "nats://" + addr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c := p.waitReady(url, "slotbroker")
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	lease, err := c.Acquire(ctx, "db", 1, client.WithLeaseTTL(10*time.Minute), client.WithHolder("daemon-test"))
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	if code := p.wait(); code == 0 {
		t.Fatalf("killed daemon exited with status 0")
	}

	p = daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data)
	c2 := p.waitReady(url, "slotbroker")
	info, err := c2.GetLimit(ctxT(t, 10*time.Second), "db")
	if err != nil {
		t.Fatalf("limit after kill -9 and restart: %v", err)
	}
	found := false
	for _, h := range info.Holders {
		found = found || h.LeaseID == lease.ID()
	}
	if !found {
		t.Fatalf("lease %s not among the holders after kill -9 and restart: %+v", lease.ID(), info.Holders)
	}
	if err := lease.Release(ctxT(t, 10*time.Second)); err != nil {
		t.Errorf("release after restart: %v", err)
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}
}

// daemonRun runs the binary to its end and returns the status and output.
func daemonRun(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	p := daemonStart(t, bin, env, args...)
	code := p.wait()
	return code, p.stderr.String()
}

func daemonExitStatuses(t *testing.T, bin string) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badYAML := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("listen: [127.0.0.1:1\nbucket: x: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknownKey := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknownKey, []byte("colour: blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	missingCA := filepath.Join(dir, "missing-ca.pem")

	cases := []struct {
		name string
		args []string
		code int
		want string // a part of the one-line message
	}{
		{"port taken", []string{"--listen", taken.Addr().String(), "--data", filepath.Join(dir, "d1")}, 69, taken.Addr().String()},
		{"data dir is a file", []string{"--listen", "127.0.0.1:0", "--data", file}, 78, file},
		{"data dir under a file", []string{"--listen", "127.0.0.1:0", "--data", filepath.Join(file, "sub")}, 78, file},
		{"missing TLS CA", []string{"--nats", "nats://127.0.0.1:1", "--tlsca", missingCA}, 78, missingCA},
		{"TLS CA not PEM", []string{"--nats", "nats://127.0.0.1:1", "--tlsca", file}, 78, file},
		{"TLS cert without key", []string{"--nats", "nats://127.0.0.1:1", "--tlscert", file}, 78, "--tlskey"},
		{"unreachable NATS", []string{"--nats", "nats://127.0.0.1:1"}, 69, "nats://127.0.0.1:1"},
		{"unknown flag", []string{"--no-such-flag"}, 64, "--no-such-flag"},
		{"stray argument", []string{"serve"}, 64, "serve"},
		{"bad flag value", []string{"--lease-ttl", "soon"}, 78, "--lease-ttl"},
		{"bad log level", []string{"--log-level", "loud"}, 78, "--log-level"},
		{"ttl above max", []string{"--lease-ttl", "2h", "--max-lease-ttl", "1h"}, 78, "--max-lease-ttl"},
		{"embedded flag with --nats", []string{"--nats", "nats://127.0.0.1:1", "--data", dir}, 78, "--data"},
		{"missing config file", []string{"--config", filepath.Join(dir, "nope.yaml")}, 78, "nope.yaml"},
		{"bad YAML", []string{"--config", badYAML}, 78, badYAML},
		{"unknown config key", []string{"--config", unknownKey}, 78, "colour"},
	}
	for _, tc := range cases {
		code, out := daemonRun(t, bin, daemonEnv(), tc.args...)
		msg := strings.TrimSuffix(out, "\n")
		t.Logf("%s: status %d: %s", tc.name, code, strings.TrimSpace(out))
		switch {
		case code != tc.code:
			t.Errorf("%s: exit status %d, want %d; output:\n%s", tc.name, code, tc.code, out)
		case msg == "" || strings.Contains(msg, "\n"):
			t.Errorf("%s: want a one-line message on stderr, got:\n%s", tc.name, out)
		case !strings.HasPrefix(msg, "slotbroker: ") || !strings.Contains(msg, tc.want):
			t.Errorf("%s: message %q does not name %q", tc.name, msg, tc.want)
		case strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic"):
			t.Errorf("%s: stack trace in output:\n%s", tc.name, out)
		}
	}

	code, out := daemonRun(t, bin, daemonEnv(), "--version")
	if code != 0 || strings.TrimSpace(out) != "slotbroker "+broker.Version {
		t.Errorf("--version: status %d, output %q; want 0 and %q", code, out, "slotbroker "+broker.Version)
	}
}

func daemonConfigFile(t *testing.T, bin string) {
	dir := t.TempDir()
	addr := daemonFreeAddr(t)
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "slotbroker.yaml")
	yaml := "listen: " + addr + "\n" +
		"data: " + data + "\n" +
		"bucket: filebucket\n" +
		"prefix: fileprefix\n" +
		"lease-ttl: 45s\n" +
		"log-level: warn\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := daemonStart(t, bin, daemonEnv(), "--config", cfg, "--prefix", "flagprefix")
	url := "nats://" + addr
	c := p.waitReady(url, "flagprefix") // the flag won over the file's prefix
	ctx := ctxT(t, 20*time.Second)
	if _, err := c.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	lease, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	// The default lease TTL came from the file.
	info, err := c.GetLimit(ctx, "db")
	if err != nil || len(info.Holders) != 1 {
		t.Fatalf("get limit: %v, %+v", err, info)
	}
	if h := info.Holders[0]; h.ExpiresAt.Sub(h.AcquiredAt) != 45*time.Second {
		t.Errorf("lease TTL = %v, want the file's default 45s", h.ExpiresAt.Sub(h.AcquiredAt))
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// The bucket came from the file.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.KeyValue(ctx, "filebucket"); err != nil {
		t.Errorf("bucket from the config file: %v", err)
	}
	if _, err := js.KeyValue(ctx, "slotbroker"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("default bucket lookup = %v, want ErrBucketNotFound", err)
	}

	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}
}

func daemonExternalNATS(t *testing.T, bin string) {
	srv, err := broker.StartNATS(broker.NATSConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()

	// --nats given through $NATS_URL.
	p := daemonStart(t, bin, daemonEnv("NATS_URL="+url), "--bucket", "ext")
	c := p.waitReady(url, "slotbroker")
	if _, err := c.CreateLimit(ctxT(t, 10*time.Second), "db", 1); err != nil {
		t.Fatalf("create limit: %v", err)
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), url) {
		t.Errorf("output does not name the NATS server %s:\n%s", url, p.stderr)
	}

	// A server that wants a user and password.
	authSrv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), Username: "broker", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	authSrv.Start()
	t.Cleanup(func() { authSrv.Shutdown(); authSrv.WaitForShutdown() })
	if !authSrv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server with auth did not start")
	}
	authURL := authSrv.ClientURL()
	code, out := daemonRun(t, bin, daemonEnv(), "--nats", authURL, "--user", "broker", "--password", "wrong")
	if msg := strings.TrimSuffix(out, "\n"); code != 78 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--password") {
		t.Errorf("wrong password: status %d, output:\n%s\nwant 78 and one line saying to check --password", code, out)
	}
	p = daemonStart(t, bin, daemonEnv(), "--nats", authURL, "--user", "broker", "--password", "s3cret")
	u := strings.Replace(authURL, "nats://", "nats://broker:s3cret@", 1)
	p.waitReady(u, "slotbroker")
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}

	// A server without JetStream (yet: a cluster still electing its meta
	// leader) is waited for, saying so; SIGTERM ends the wait cleanly.
	plain := plainNATS(t)
	p = daemonStart(t, bin, daemonEnv(), "--nats", plain.ClientURL())
	eventually(t, daemonBound, "the daemon saying it waits for JetStream", func() bool {
		return strings.Contains(p.stderr.String(), "waiting for JetStream") || p.exited()
	})
	if p.exited() {
		t.Fatalf("no JetStream: the daemon exited (status %d) instead of waiting:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM while waiting for JetStream: status %d, want 0:\n%s", code, p.stderr)
	}
}

// plainNATS is a NATS server without JetStream (as a cluster is while it
// elects its meta leader), stopped at the end of the test.
func plainNATS(t *testing.T) *server.Server {
	t.Helper()
	return startNATS(t, &server.Options{})
}

// natsFromConfig is a NATS server configured by the nats-server
// configuration text conf, stopped at the end of the test.
func natsFromConfig(t *testing.T, conf string) *server.Server {
	t.Helper()
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server config:\n%s\n%v", conf, err)
	}
	return startNATS(t, opts)
}

// startNATS starts a NATS server with opts on a free port of 127.0.0.1,
// without signal handlers or logs, and stops it at the end of the test.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	return s
}
