package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
)

// cliEnv is a built slotctl binary and a running broker to point it at:
// the slotbroker daemon binary when it builds, else an embedded broker.
type cliEnv struct {
	t   *testing.T
	bin string
	dir string
	url string
	c   *client.Client
}

// TestCLI runs slotctl as a subprocess against a real broker.
func TestCLI(t *testing.T) {
	x := newCLIEnv(t)
	t.Run("CreateLsInspect", x.testCreateLsInspect)
	t.Run("UpdateEnableDisable", x.testUpdateEnableDisable)
	t.Run("Delete", x.testDelete)
	t.Run("UsageErrors", x.testUsageErrors)
	t.Run("Unreachable", x.testUnreachable)
	t.Run("RunExitStatus", x.testRunExitStatus)
	t.Run("RunTakesTurns", x.testRunTakesTurns)
	t.Run("RunTimeout", x.testRunTimeout)
	t.Run("RunOccupyAboveLimit", x.testRunOccupyAboveLimit)
	t.Run("RunForwardsSignal", x.testRunForwardsSignal)
	t.Run("RunLeaseLost", x.testRunLeaseLost)
	t.Run("Rate", x.testRate)
	t.Run("WatchJSON", x.testWatchJSON)
}

func newCLIEnv(t *testing.T) *cliEnv {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	x := &cliEnv{t: t, dir: dir, bin: filepath.Join(dir, "slotctl")}
	if out, err := cliGo(root, "build", "-o", x.bin, "./cmd/slotctl"); err != nil {
		t.Fatalf("build slotctl: %v\n%s", err, out)
	}
	x.url = x.startBroker(root)
	nc, err := nats.Connect(x.url)
	if err != nil {
		t.Fatalf("connect %s: %v", x.url, err)
	}
	t.Cleanup(nc.Close)
	if x.c, err = client.New(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.c.Close() })
	return x
}

func cliGo(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

// startBroker starts the slotbroker daemon if cmd/slotbroker builds, else
// an embedded broker, and returns the NATS URL once the broker answers.
func (x *cliEnv) startBroker(root string) string {
	t := x.t
	if _, err := os.Stat(filepath.Join(root, "cmd", "slotbroker", "main.go")); err == nil {
		bin := filepath.Join(x.dir, "slotbroker")
		if out, err := cliGo(root, "build", "-o", bin, "./cmd/slotbroker"); err != nil {
			t.Logf("cmd/slotbroker does not build, using an embedded broker: %v\n%s", err, out)
		} else {
			return x.startDaemon(bin)
		}
	}
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: filepath.Join(x.dir, "data")})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(e.Stop)
	return e.URL
}

func (x *cliEnv) startDaemon(bin string) string {
	t := x.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var logs syncBuffer
	cmd := exec.Command(bin, "--listen", addr, "--data", filepath.Join(x.dir, "data"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start slotbroker: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	url := "nats://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("slotbroker exited before it was ready:\n%s", logs.String())
		default:
		}
		if cliBrokerAnswers(url) {
			t.Logf("using the slotbroker daemon at %s", url)
			return url
		}
		if time.Now().After(deadline) {
			t.Fatalf("slotbroker not ready within 30s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cliBrokerAnswers(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = c.ListLimits(ctx)
	return err == nil
}

// cliResult is one slotctl run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// command prepares slotctl with -s pointing at the broker; stdin is /dev/null.
func (x *cliEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command(x.bin, append([]string{"-s", x.url}, args...)...)
	cmd.Env = append(os.Environ(), "NATS_URL=")
	return cmd
}

// slotctl runs slotctl with args against the broker and waits for it.
func (x *cliEnv) slotctl(t *testing.T, args ...string) cliResult {
	t.Helper()
	return cliWait(t, x.command(args...))
}

// raw runs slotctl with args only (no -s).
func (x *cliEnv) raw(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(x.bin, args...)
	cmd.Env = append(os.Environ(), "NATS_URL=")
	return cliWait(t, cmd)
}

func cliWait(t *testing.T, cmd *exec.Cmd) cliResult {
	t.Helper()
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish within 60s; stderr:\n%s", cmd.Args, stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok checks that a run succeeded.
func (r cliResult) ok(t *testing.T) cliResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

// fails checks the exit status and that stderr is one "slotctl: " line containing want.
func (r cliResult) fails(t *testing.T, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "slotctl: ") || !strings.Contains(lines[0], want) {
		t.Fatalf("stderr %q: want one line \"slotctl: ...%s...\"", r.stderr, want)
	}
}

func cliDecode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func (x *cliEnv) info(t *testing.T, name string) *client.LimitInfo {
	t.Helper()
	info, err := x.c.GetLimit(ctxT(t, 10*time.Second), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return info
}

func (x *cliEnv) testCreateLsInspect(t *testing.T) {
	r := x.slotctl(t, "create", "cli-db", "--limit", "2").ok(t)
	if !strings.Contains(r.stdout, "cli-db") {
		t.Fatalf("create printed %q", r.stdout)
	}
	x.slotctl(t, "create", "cli-db", "--limit", "2").fails(t, 65, "already exists")
	x.slotctl(t, "create", "bad.name", "--limit", "1").fails(t, 65, "bad.name")

	r = x.slotctl(t, "create", "cli-dbrate", "--limit", "5", "--slot-decay-per-second", "2.5", "--json").ok(t)
	created := cliDecode[map[string]any](t, r.stdout)
	if created["name"] != "cli-dbrate" || created["limit"] != 5.0 || created["slot_decay_per_second"] != 2.5 || created["active"] != true {
		t.Fatalf("create --json: %v", created)
	}

	r = x.slotctl(t, "ls").ok(t)
	for _, want := range []string{"cli-db", "cli-dbrate", "SLOT DECAY PER SECOND", "2.5", "NEXT SLOT IN"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("ls output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = x.slotctl(t, "ls", "--json").ok(t)
	list := cliDecode[[]map[string]any](t, r.stdout)
	var found map[string]any
	for _, l := range list {
		if l["name"] == "cli-db" {
			found = l
		}
	}
	if found == nil {
		t.Fatalf("ls --json lacks cli-db: %s", r.stdout)
	}
	for _, key := range []string{"limit", "slot_decay_per_second", "active", "active_slots", "denied_slots", "holders", "waiters"} {
		if _, ok := found[key]; !ok {
			t.Fatalf("ls --json entry lacks %q: %v", key, found)
		}
	}
	if found["limit"] != 2.0 || found["active"] != true || found["active_slots"] != 0.0 {
		t.Fatalf("ls --json entry: %v", found)
	}

	ctx := ctxT(t, 10*time.Second)
	lease, err := x.c.Acquire(ctx, "cli-db", 1, client.WithHolder("cli-test-holder"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lease.Release(ctx) }()
	r = x.slotctl(t, "inspect", "cli-db").ok(t)
	for _, want := range []string{"cli-db", lease.ID(), "cli-test-holder", "Active slots:", "Holders (1)", "Waiters (0)"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = x.slotctl(t, "inspect", "cli-db", "--json").ok(t)
	got := cliDecode[cliInspect](t, r.stdout)
	if got.Name != "cli-db" || got.Limit != 2 || got.ActiveSlots != 1 || len(got.Holders) != 1 || got.Waiters == nil {
		t.Fatalf("inspect --json: %+v", got)
	}
	if h := got.Holders[0]; h.LeaseID != lease.ID() || h.Occupy != 1 || h.Holder != "cli-test-holder" || h.Token != lease.Token() {
		t.Fatalf("inspect --json holder %+v, want lease %s token %d", h, lease.ID(), lease.Token())
	}

	x.slotctl(t, "inspect", "cli-missing").fails(t, 65, "cli-missing")
	x.slotctl(t, "inspect", "bad/name").fails(t, 65, "bad/name")
}

// cliInspect is the part of `inspect --json` the tests check.
type cliInspect struct {
	Name        string `json:"name"`
	Limit       int    `json:"limit"`
	ActiveSlots int    `json:"active_slots"`
	Holders     []struct {
		LeaseID string `json:"lease_id"`
		Occupy  int    `json:"occupy"`
		Holder  string `json:"holder"`
		Token   uint64 `json:"token"`
	} `json:"holders"`
	Waiters []any `json:"waiters"`
}

func (x *cliEnv) testUpdateEnableDisable(t *testing.T) {
	x.slotctl(t, "create", "cli-upd", "--limit", "1").ok(t)
	x.slotctl(t, "update", "cli-upd").fails(t, 64, "--limit")
	x.slotctl(t, "update", "cli-upd", "--enable", "--disable").fails(t, 64, "enable")
	x.slotctl(t, "update", "cli-nothere", "--limit", "2").fails(t, 65, "cli-nothere")

	r := x.slotctl(t, "update", "cli-upd", "--limit", "3", "--slot-decay-per-second", "0.5", "--json").ok(t)
	u := cliDecode[map[string]any](t, r.stdout)
	if u["limit"] != 3.0 || u["slot_decay_per_second"] != 0.5 {
		t.Fatalf("update --json: %v", u)
	}
	if info := x.info(t, "cli-upd"); info.Limit.Limit != 3 || info.SlotDecayPerSecond != 0.5 {
		t.Fatalf("after update: %+v", info)
	}

	x.slotctl(t, "disable", "cli-upd").ok(t)
	if x.info(t, "cli-upd").Active {
		t.Fatal("still active after disable")
	}
	x.slotctl(t, "enable", "cli-upd").ok(t)
	if !x.info(t, "cli-upd").Active {
		t.Fatal("inactive after enable")
	}
	x.slotctl(t, "update", "cli-upd", "--disable").ok(t)
	if x.info(t, "cli-upd").Active {
		t.Fatal("still active after update --disable")
	}
	x.slotctl(t, "create", "cli-off", "--limit", "1", "--disable").ok(t)
	if x.info(t, "cli-off").Active {
		t.Fatal("create --disable made an active limit")
	}
	x.slotctl(t, "enable", "cli-nothere").fails(t, 65, "cli-nothere")
}

func (x *cliEnv) testDelete(t *testing.T) {
	x.slotctl(t, "create", "cli-del", "--limit", "1").ok(t)
	x.slotctl(t, "delete", "cli-del").fails(t, 64, "--yes")
	x.info(t, "cli-del") // still there
	x.slotctl(t, "delete", "cli-del", "--yes").ok(t)
	if _, err := x.c.GetLimit(ctxT(t, 10*time.Second), "cli-del"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	x.slotctl(t, "delete", "cli-del", "--yes").fails(t, 65, "cli-del")
}

func (x *cliEnv) testUsageErrors(t *testing.T) {
	x.slotctl(t, "frobnicate").fails(t, 64, "frobnicate")
	x.slotctl(t).fails(t, 64, "missing command")
	x.slotctl(t, "create", "cli-x").fails(t, 64, "limit")
	x.slotctl(t, "ls", "--bogus").fails(t, 64, "--bogus")
	x.slotctl(t, "inspect").fails(t, 64, "one limit name")
	x.slotctl(t, "run", "cli-db").fails(t, 64, "missing command")
	x.slotctl(t, "run", "cli-db", "--occupy", "0", "--", "true").fails(t, 64, "--occupy")
	x.slotctl(t, "create", "cli-x", "--limit", "many").fails(t, 64, "many")
}

func (x *cliEnv) testUnreachable(t *testing.T) {
	x.raw(t, "-s", "nats://127.0.0.1:1", "ls").fails(t, 69, "nats://127.0.0.1:1")
	x.raw(t, "-s", "nats://127.0.0.1:1", "run", "cli-db", "--", "true").fails(t, 69, "nats://127.0.0.1:1")
	// A NATS server without a broker under the prefix.
	x.slotctl(t, "--prefix", "nobroker", "ls").fails(t, 69, "nobroker")
	x.slotctl(t, "--prefix", "nobroker", "run", "cli-db", "--", "true").fails(t, 69, "nobroker")
}

func (x *cliEnv) testRunExitStatus(t *testing.T) {
	x.slotctl(t, "create", "cli-run", "--limit", "1").ok(t)
	r := x.slotctl(t, "run", "cli-run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("run: exit %d stdout %q stderr %q; want 3, \"out\\n\", \"err\\n\"", r.code, r.stdout, r.stderr)
	}
	r = x.slotctl(t, "run", "cli-run", "--", "sh", "-c", "kill -TERM $$")
	if r.code != 128+int(syscall.SIGTERM) {
		t.Fatalf("run of a command killed by SIGTERM: exit %d, want %d; stderr %q", r.code, 128+int(syscall.SIGTERM), r.stderr)
	}
	// Stdin is passed through.
	cmd := x.command("run", "cli-run", "--", "cat")
	cmd.Stdin = strings.NewReader("piped\n")
	if r := cliWait(t, cmd).ok(t); r.stdout != "piped\n" {
		t.Fatalf("run cat printed %q", r.stdout)
	}
	x.slotctl(t, "run", "cli-run", "--", filepath.Join(x.dir, "no-such-command")).fails(t, 127, "no-such-command")
	if info := x.info(t, "cli-run"); len(info.Holders) != 0 || info.ActiveSlots != 0 {
		t.Fatalf("slots still held after the runs: %+v", info)
	}
	x.slotctl(t, "run", "--strict", "cli-nolimit", "--", "true").fails(t, 65, "cli-nolimit")
	x.slotctl(t, "create", "cli-runoff", "--limit", "1", "--disable").ok(t)
	x.slotctl(t, "run", "--strict", "cli-runoff", "--", "true").fails(t, 65, "cli-runoff")
}

func (x *cliEnv) testRunTakesTurns(t *testing.T) {
	x.slotctl(t, "create", "cli-turns", "--limit", "1").ok(t)
	dir := t.TempDir()
	log, gate := filepath.Join(dir, "log"), filepath.Join(dir, "go")
	// A holds the slot until the test creates the gate file.
	a := x.command("run", "cli-turns", "--holder", "first-run", "--", "sh", "-c",
		`echo startA >> "$0"; while [ ! -e "$1" ]; do sleep 0.01; done; echo endA >> "$0"`, log, gate)
	var aOut syncBuffer
	a.Stdout, a.Stderr = &aOut, &aOut
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() { aDone <- a.Wait() }()
	eventually(t, 20*time.Second, "run A holds the slot and started", func() bool {
		b, _ := os.ReadFile(log)
		return string(b) == "startA\n"
	})

	b := x.command("run", "cli-turns", "--", "sh", "-c", `echo startB >> "$0"; echo endB >> "$0"`, log)
	bErr, err := b.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	// B explains why it waits: its queue position and A's holder.
	lines := cliLines(bErr)
	line := cliAwaitLine(t, lines, 20*time.Second, "B's waiting message", func(l string) bool { return strings.Contains(l, "position 1") })
	if !strings.HasPrefix(line, "slotctl: ") || !strings.Contains(line, "first-run") {
		t.Fatalf("waiting message %q lacks the holder first-run", line)
	}
	if got, _ := os.ReadFile(log); string(got) != "startA\n" {
		t.Fatalf("B ran while A held the slot: log %q", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-aDone; err != nil {
		t.Fatalf("run A: %v\n%s", err, aOut.String())
	}
	go func() {
		for range lines {
		}
	}()
	if err := b.Wait(); err != nil {
		t.Fatalf("run B: %v", err)
	}
	got, _ := os.ReadFile(log)
	if want := "startA\nendA\nstartB\nendB\n"; string(got) != want {
		t.Fatalf("log %q, want %q: the runs overlapped", got, want)
	}
}

// cliLines sends r's lines to a channel, closed at EOF.
func cliLines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// cliAwaitLine returns the first line from lines that match accepts, failing after within.
func cliAwaitLine(t *testing.T, lines <-chan string, within time.Duration, what string, match func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before %s; saw %q", what, seen)
			}
			if match(l) {
				return l
			}
			seen = append(seen, l)
		case <-timer.C:
			t.Fatalf("no %s within %v; saw %q", what, within, seen)
		}
	}
}

func (x *cliEnv) testRunTimeout(t *testing.T) {
	x.slotctl(t, "create", "cli-busy", "--limit", "1").ok(t)
	ctx := ctxT(t, 20*time.Second)
	lease, err := x.c.Acquire(ctx, "cli-busy", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lease.Release(ctx) }()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	x.slotctl(t, "run", "cli-busy", "--timeout", "300ms", "--", "touch", marker).fails(t, 75, "timed out")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although the slot was never granted")
	}
	if info := x.info(t, "cli-busy"); len(info.Waiters) != 0 || len(info.Holders) != 1 {
		t.Fatalf("after the timeout: %d waiters, %d holders; want 0 and 1", len(info.Waiters), len(info.Holders))
	}
}

func (x *cliEnv) testRunOccupyAboveLimit(t *testing.T) {
	x.slotctl(t, "create", "cli-small", "--limit", "1").ok(t)
	x.slotctl(t, "run", "cli-small", "--occupy", "2", "--", "true").fails(t, 65, "occupy")
	x.slotctl(t, "create", "cli-small2", "--limit", "3").ok(t)
	// All or nothing over several names: the smaller limit refuses.
	x.slotctl(t, "run", "cli-small2,cli-small", "--occupy", "2", "--", "true").fails(t, 65, "cli-small")
	x.slotctl(t, "run", "cli-small2,cli-small", "--", "true").ok(t)
}

// startRun starts `slotctl run name -- sleep 60` and waits until it holds the slot.
func (x *cliEnv) startRun(t *testing.T, name string, extra ...string) (*exec.Cmd, *syncBuffer, chan int) {
	t.Helper()
	args := append(append([]string{"run", name}, extra...), "--", "sleep", "60")
	cmd := x.command(args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			done <- ee.ExitCode()
			return
		}
		done <- 0
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	eventually(t, 20*time.Second, "run holds the slot", func() bool {
		info, err := x.c.GetLimit(ctxT(t, 5*time.Second), name)
		return err == nil && len(info.Holders) == 1
	})
	return cmd, &out, done
}

func cliExit(t *testing.T, done chan int, out *syncBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("slotctl run did not exit within 30s; output:\n%s", out.String())
		return 0
	}
}

func (x *cliEnv) testRunForwardsSignal(t *testing.T) {
	x.slotctl(t, "create", "cli-sig", "--limit", "1").ok(t)
	cmd, out, done := x.startRun(t, "cli-sig")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := cliExit(t, done, out); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit %d, want %d; output:\n%s", code, 128+int(syscall.SIGTERM), out.String())
	}
	if info := x.info(t, "cli-sig"); len(info.Holders) != 0 {
		t.Fatalf("slot still held after the run ended: %+v", info.Holders)
	}
}

func (x *cliEnv) testRunLeaseLost(t *testing.T) {
	x.slotctl(t, "create", "cli-lost", "--limit", "1").ok(t)
	_, out, done := x.startRun(t, "cli-lost", "--lease-ttl", "1s")
	x.slotctl(t, "delete", "cli-lost", "--yes").ok(t)
	if code := cliExit(t, done, out); code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit %d, want %d (child sent SIGTERM); output:\n%s", code, 128+int(syscall.SIGTERM), out.String())
	}
	if !strings.Contains(out.String(), "slotctl: lease lost") {
		t.Fatalf("output lacks \"slotctl: lease lost\":\n%s", out.String())
	}
}

func (x *cliEnv) testRate(t *testing.T) {
	x.slotctl(t, "create", "cli-rl", "--limit", "5", "--slot-decay-per-second", "0.01").ok(t)
	x.slotctl(t, "rate", "cli-rl", "--occupy", "5").ok(t)
	if info := x.info(t, "cli-rl"); info.ActiveSlots == 0 {
		t.Fatalf("rate admitted nothing: %+v", info)
	}
	// The bucket is full and refills one slot per 100 s.
	x.slotctl(t, "rate", "cli-rl", "--timeout", "300ms").fails(t, 75, "timed out")
	x.slotctl(t, "create", "cli-notrate", "--limit", "5").ok(t)
	x.slotctl(t, "rate", "cli-notrate").fails(t, 65, "slot decay")
	x.slotctl(t, "rate", "cli-rl", "--occupy", "6").fails(t, 65, "occupy")
}

func (x *cliEnv) testWatchJSON(t *testing.T) {
	x.slotctl(t, "create", "cli-watch", "--limit", "1").ok(t)
	cmd := x.command("watch", "cli-watch", "--json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut syncBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := cliLines(stdout)

	// The watch subscribes asynchronously: acquire and release until it
	// reports an acquisition of ours.
	ctx := ctxT(t, 30*time.Second)
	ours := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	var ev map[string]any
	for ev == nil {
		if time.Now().After(deadline) {
			t.Fatalf("watch printed no acquired event within 20s; stderr:\n%s", errOut.String())
		}
		l, err := x.c.Acquire(ctx, "cli-watch", 1, client.WithHolder("cli-watcher"))
		if err != nil {
			t.Fatal(err)
		}
		ours[l.ID()] = true
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		// Drain what the watch printed so far; wait briefly for more.
		wait := time.NewTimer(200 * time.Millisecond)
	drain:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended; stderr:\n%s", errOut.String())
				}
				m := cliDecode[map[string]any](t, line)
				if m["kind"] == "acquired" && ours[m["lease_id"].(string)] {
					ev = m
					break drain
				}
			case <-wait.C:
				break drain
			}
		}
		wait.Stop()
	}
	if ev["limit"] != "cli-watch" || ev["holder"] != "cli-watcher" || ev["occupy"] != 1.0 {
		t.Fatalf("acquired event %v", ev)
	}
	if _, ok := ev["at"]; !ok {
		t.Fatalf("acquired event lacks at: %v", ev)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v, want exit 0; stderr:\n%s", err, errOut.String())
	}
}
