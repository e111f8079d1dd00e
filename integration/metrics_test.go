package integration

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// TestMetricsAndHealth builds cmd/slotbroker once and checks --http:
// /metrics counts a scripted workload exactly, /healthz and /readyz follow
// the broker.
func TestMetricsAndHealth(t *testing.T) {
	bin := daemonBuild(t)
	t.Run("MetricsCountTheScriptedWorkloadExactly", func(t *testing.T) { metricsCountWorkload(t, bin) })
	t.Run("ReadyzReadyForLeaderAndSyncedStandbyAcrossFailover", func(t *testing.T) { readyzFailover(t, bin) })
	t.Run("ReadyzNotReadyWhileWaitingForJetStream", func(t *testing.T) { readyzStarting(t, bin) })
	t.Run("ReadyzFlipsWhenTheBrokerStopsServing", func(t *testing.T) { readyzFlips(t, bin) })
	t.Run("HTTPAddressTakenExitsConfig", func(t *testing.T) { httpAddressTaken(t, bin) })
}

// httpGet returns the status and body of GET url, or 0 when it failed.
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scrape reads /metrics into a map from series (name{labels} as exposed,
// labels sorted by name) to value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	code, body := httpGet(base + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func metricsCountWorkload(t *testing.T, bin string) {
	addr, httpAddr, data := daemonFreeAddr(t), daemonFreeAddr(t), filepath.Join(t.TempDir(), "data")
	base := "http://" + httpAddr
	p := daemonStart(t, bin, daemonEnv(), "--listen", addr, "--data", data, "--http", httpAddr)
	c := p.waitReady("nats://"+addr, "slotbroker")

	if code, body := httpGet(base + "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := httpGet(base + "/readyz"); code != 200 {
		t.Errorf("/readyz of the serving leader = %d %q, want 200", code, body)
	}

	ctx := ctxT(t, 30*time.Second)
	if _, err := c.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatalf("create: %v", err)
	}
	// The live view is mounted on the same address.
	if code, body := httpGet(base + "/"); code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("GET / = %d, want the live view's page:\n%.300s", code, body)
	}
	if code, body := httpGet(base + "/api/limits"); code != 200 || !strings.Contains(body, `"db"`) {
		t.Errorf("GET /api/limits = %d %q, want the limit db", code, body)
	}
	for i := range 5 {
		l, err := c.Acquire(ctx, "db", 1)
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	l1, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := c.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := c.TryAcquire(ctx, "db", 1); err == nil {
		_ = l.Release(ctx)
		t.Fatal("try-acquire on a full limit was granted")
	}
	// A queued waiter, granted when l1 is released.
	var wg sync.WaitGroup
	var l3 *client.Lease
	var err3 error
	wg.Add(1)
	go func() {
		defer wg.Done()
		l3, err3 = c.Acquire(ctx, "db", 1)
	}()
	eventually(t, 20*time.Second, "one waiter queued on db", func() bool {
		return scrape(t, base)[`slotbroker_limit_waiters{limit="db"}`] == 1
	})
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err3 != nil {
		t.Fatalf("queued acquire: %v", err3)
	}
	for _, l := range []*client.Lease{l2, l3} {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The handoff is observed once the broker has the waiter's acceptance,
	// which may come just after the client returned.
	var m map[string]float64
	eventually(t, 20*time.Second, "the handoff and every hold observed", func() bool {
		m = scrape(t, base)
		return m[`slotbroker_limit_handoff_seconds_count{limit="db"}`] == 1 && m[`slotbroker_limit_hold_seconds_count{limit="db"}`] == 8
	})
	want := map[string]float64{
		`slotbroker_limit_slots{limit="db"}`:                                    2,
		`slotbroker_limit_slots_held{limit="db"}`:                               0,
		`slotbroker_limit_waiters{limit="db"}`:                                  0,
		`slotbroker_limit_grants_total{limit="db"}`:                             8, // 5 cycles, l1, l2, the waiter
		`slotbroker_limit_refusals_total{limit="db",reason="no_slots"}`:         1,
		`slotbroker_limit_refusals_total{limit="db",reason="too_many_waiters"}`: 0,
		`slotbroker_limit_expiries_total{limit="db"}`:                           0,
		`slotbroker_limit_wait_seconds_count{limit="db"}`:                       1,
		`slotbroker_limit_hold_seconds_count{limit="db"}`:                       8,
		`slotbroker_limit_handoff_seconds_count{limit="db"}`:                    1,
		`slotbroker_limit_grants_total{limit="_other"}`:                         0,
		`slotbroker_limits`:               1,
		`slotbroker_role{role="leader"}`:  1,
		`slotbroker_role{role="standby"}`: 0,
		`slotbroker_standby_lag_entries`:  0,
		// 5 + 2 granted, the queued one answered "queued"; the try refused.
		`slotbroker_request_duration_seconds_count{outcome="ok",verb="acquire"}`:       8,
		`slotbroker_request_duration_seconds_count{outcome="no_slots",verb="acquire"}`: 1,
		`slotbroker_request_duration_seconds_count{outcome="ok",verb="release"}`:       8,
		`slotbroker_request_duration_seconds_count{outcome="ok",verb="create"}`:        1,
	}
	for k, v := range want {
		got, ok := m[k]
		if !ok {
			t.Errorf("/metrics has no series %s", k)
		} else if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	for _, k := range []string{"slotbroker_journal_append_duration_seconds_count", "slotbroker_journal_append_ops_count",
		"slotbroker_snapshot_duration_seconds_count", "go_goroutines", "process_start_time_seconds"} {
		if m[k] == 0 {
			t.Errorf("%s = %v, want > 0", k, m[k])
		}
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0:\n%s", code, p.stderr)
	}
}

// waitHTTP polls GET url until it answers want and the body contains part.
func waitHTTP(t *testing.T, p *daemonProc, url string, want int, part string) {
	t.Helper()
	var code int
	var body string
	eventually(t, daemonBound, url+" answering "+strconv.Itoa(want)+" "+part, func() bool {
		if p.exited() {
			t.Fatalf("slotbroker exited with status %d:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
		}
		code, body = httpGet(url)
		return code == want && strings.Contains(body, part)
	})
	if strings.Contains(strings.TrimSuffix(body, "\n"), "\n") {
		t.Errorf("%s: body %q is more than one line", url, body)
	}
}

func readyzFailover(t *testing.T, bin string) {
	srv, err := broker.StartNATS(broker.NATSConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()
	hA, hB := daemonFreeAddr(t), daemonFreeAddr(t)
	a := daemonStart(t, bin, daemonEnv(), "--nats", url, "--http", hA)
	a.waitReady(url, "slotbroker")
	waitHTTP(t, a, "http://"+hA+"/readyz", 200, "leader")

	b := daemonStart(t, bin, daemonEnv(), "--nats", url, "--http", hB)
	waitHTTP(t, b, "http://"+hB+"/readyz", 200, "standby")
	if m := scrape(t, "http://"+hB); m[`slotbroker_role{role="standby"}`] != 1 || m[`slotbroker_role{role="leader"}`] != 0 {
		t.Errorf("standby's role gauges: leader %v standby %v, want 0 and 1", m[`slotbroker_role{role="leader"}`], m[`slotbroker_role{role="standby"}`])
	}

	if code := a.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("A: exit status after SIGTERM = %d, want 0:\n%s", code, a.stderr)
	}
	waitHTTP(t, b, "http://"+hB+"/readyz", 200, "leader")
	if m := scrape(t, "http://"+hB); m[`slotbroker_role{role="leader"}`] != 1 {
		t.Errorf("B after the failover: role leader = %v, want 1", m[`slotbroker_role{role="leader"}`])
	}
	if code := b.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("B: exit status after SIGTERM = %d, want 0:\n%s", code, b.stderr)
	}
}

func readyzStarting(t *testing.T, bin string) {
	plain := plainNATS(t)
	h := daemonFreeAddr(t)
	p := daemonStart(t, bin, daemonEnv(), "--nats", plain.ClientURL(), "--http", h)
	// "starting: waiting for JetStream" comes from the broker, whose
	// metrics are registered by then ("starting: connecting to NATS",
	// before it exists, has no role gauge yet).
	waitHTTP(t, p, "http://"+h+"/readyz", 503, "starting: waiting for JetStream")
	if code, body := httpGet("http://" + h + "/healthz"); code != 200 {
		t.Errorf("/healthz while starting = %d %q, want 200", code, body)
	}
	if m := scrape(t, "http://"+h); m[`slotbroker_role{role="starting"}`] != 1 {
		t.Errorf("role starting = %v, want 1", m[`slotbroker_role{role="starting"}`])
	}
	if code := p.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM while waiting for JetStream: status %d, want 0:\n%s", code, p.stderr)
	}
}

func httpAddressTaken(t *testing.T, bin string) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	code, out := daemonRun(t, bin, daemonEnv(), "--listen", daemonFreeAddr(t), "--data", filepath.Join(t.TempDir(), "d"),
		"--http", taken.Addr().String())
	msg := strings.TrimSuffix(out, "\n")
	if code != 78 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--http") || !strings.Contains(msg, taken.Addr().String()) {
		t.Errorf("--http on a taken address: status %d, output:\n%s\nwant 78 and one line naming --http and the address", code, out)
	}
}

// readyzFlips: a leader whose JetStream goes away cannot renew its lease,
// stops serving and stands by again (waiting for JetStream): /readyz flips
// to 503; when JetStream is back it serves again and /readyz is 200.
func readyzFlips(t *testing.T, bin string) {
	dir := t.TempDir()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	h := daemonFreeAddr(t)
	p := daemonStart(t, bin, daemonEnv(), "--nats", srv.ClientURL(), "--http", h)
	p.waitReady(srv.ClientURL(), "slotbroker")
	waitHTTP(t, p, "http://"+h+"/readyz", 200, "leader")
	if err := srv.DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, p, "http://"+h+"/readyz", 503, "")
	if err := srv.EnableJetStream(&server.JetStreamConfig{StoreDir: dir}); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, p, "http://"+h+"/readyz", 200, "leader")
	if p.exited() {
		t.Fatalf("the daemon exited (%d) instead of standing by:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr)
	}
}
