package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// syncInterval is the JetStream fsync interval, matched to Redis's
// appendfsync everysec.
const syncInterval = time.Second

// freePort returns a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// rssOf reads VmRSS of pid (0: this process) in bytes.
func rssOf(pid int) (int64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, errors.New("no VmRSS in " + p)
}

// brokerInst is one slotbroker: the binary as a separate process, or (inproc)
// an embedded nats-server and a Broker inside the bench process.
type brokerInst struct {
	bin    string // binary; "" means in-process
	dir    string // data directory
	listen string // HOST:PORT
	log    string // the process's output file

	cmd  *exec.Cmd
	done chan struct{}

	srv *server.Server
	nc  *nats.Conn
	b   *broker.Broker
}

// newBroker prepares a broker on a fresh data directory under tmp.
func newBroker(bin, tmp, name string) (*brokerInst, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, name)
	return &brokerInst{bin: bin, dir: dir, listen: "127.0.0.1:" + strconv.Itoa(port), log: dir + ".log"}, nil
}

// URL is the NATS URL clients connect to.
func (bi *brokerInst) URL() string { return "nats://" + bi.listen }

// PID is the broker's process id (0 when in-process).
func (bi *brokerInst) PID() int {
	if bi.cmd != nil && bi.cmd.Process != nil {
		return bi.cmd.Process.Pid
	}
	return 0
}

// RSS is the broker's resident memory (the bench process's when in-process).
func (bi *brokerInst) RSS() (int64, error) { return rssOf(bi.PID()) }

// start starts the broker and returns the time until it first answered a
// request (a get of probe; not_found counts as an answer).
func (bi *brokerInst) start(ctx context.Context, probe string) (time.Duration, error) {
	t0 := time.Now()
	if bi.bin == "" {
		if err := bi.startInproc(ctx); err != nil {
			return 0, err
		}
	} else if err := bi.startProc(); err != nil {
		return 0, err
	}
	d, err := bi.waitServing(ctx, t0, probe)
	if err != nil {
		bi.stop()
		return 0, err
	}
	return d, nil
}

// brokerSyncAlways runs the daemon with --sync-always (flag --sync-always).
var brokerSyncAlways bool

func (bi *brokerInst) startProc() error {
	out, err := os.OpenFile(bi.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"--listen", bi.listen, "--data", bi.dir}
	if brokerSyncAlways {
		args = append(args, "--sync-always")
	} else {
		args = append(args, "--sync-interval", syncInterval.String())
	}
	cmd := exec.Command(bi.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", bi.bin, err)
	}
	bi.cmd, bi.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(bi.done)
	}()
	return nil
}

func (bi *brokerInst) startInproc(ctx context.Context) error {
	s, err := broker.StartNATS(broker.NATSConfig{Listen: bi.listen, StoreDir: bi.dir, SyncInterval: syncInterval})
	if err != nil {
		return err
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Name("slotbroker-inproc"))
	if err != nil {
		s.Shutdown()
		return err
	}
	b, err := broker.New(nc)
	if err == nil {
		// Start needs a deadline (its flush fails on a context without one).
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = b.Start(sctx)
		cancel()
	}
	if err != nil {
		nc.Close()
		s.Shutdown()
		return err
	}
	bi.srv, bi.nc, bi.b = s, nc, b
	return nil
}

// waitServing polls until the broker answers a get of probe.
func (bi *brokerInst) waitServing(ctx context.Context, t0 time.Time, probe string) (time.Duration, error) {
	deadline := t0.Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if bi.done != nil {
			select {
			case <-bi.done:
				return 0, fmt.Errorf("slotbroker exited during start: %s", tail(bi.log))
			default:
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		nc, err := nats.Connect(bi.URL(), nats.Timeout(200*time.Millisecond), nats.MaxReconnects(0))
		if err == nil {
			c, _ := client.New(nc, client.WithRetryFor(0), client.WithRequestTimeout(250*time.Millisecond), client.WithLogger(quiet))
			_, err = c.GetLimit(ctx, probe)
			if err == nil || errors.Is(err, client.ErrNotFound) {
				d := time.Since(t0)
				c.Close()
				nc.Close()
				return d, nil
			}
			c.Close()
			nc.Close()
		}
		last = err
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("slotbroker at %s did not serve within 60s: %v; %s", bi.listen, last, tail(bi.log))
}

// kill ends the broker abruptly: SIGKILL for the process; in-process, the
// server is shut down without stopping the broker first.
func (bi *brokerInst) kill() {
	if bi.cmd != nil {
		_ = bi.cmd.Process.Signal(syscall.SIGKILL)
		<-bi.done
		bi.cmd = nil
		return
	}
	if bi.srv != nil {
		bi.nc.Close()
		bi.srv.Shutdown()
		bi.srv.WaitForShutdown()
		bi.srv, bi.nc, bi.b = nil, nil, nil
	}
}

// stop ends the broker gracefully (SIGTERM, then SIGKILL after 5 s).
func (bi *brokerInst) stop() {
	if bi.cmd != nil {
		_ = bi.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-bi.done:
		case <-time.After(5 * time.Second):
			_ = bi.cmd.Process.Signal(syscall.SIGKILL)
			<-bi.done
		}
		bi.cmd = nil
		return
	}
	if bi.b != nil {
		_ = bi.b.Stop()
	}
	bi.kill()
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(data) == 0 {
		return "(no output)"
	}
	if len(data) > 600 {
		data = data[len(data)-600:]
	}
	return "output: " + string(bytes.TrimSpace(data))
}

// quiet is a logger that drops everything (missing-limit warnings and the like).
var quiet = slog.New(slog.DiscardHandler)

// redisInst is a redis-server process.
type redisInst struct {
	cmd     *exec.Cmd
	done    chan struct{}
	addr    string
	version string
}

// startRedis starts redis-server with AOF fsync every second and no RDB
// snapshots in dir. It returns (nil, reason) when no redis-server is installed.
func startRedis(ctx context.Context, dir string) (*redisInst, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found in PATH (apt-get install -y redis-server): the Redis peer is skipped")
	}
	ver := "unknown"
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if v, ok := strings.CutPrefix(f, "v="); ok {
				ver = v
			}
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--appendonly", "yes",
		"--appendfsync", "everysec", "--dir", dir, "--save", "", "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	r := &redisInst{cmd: cmd, done: make(chan struct{}), addr: "127.0.0.1:" + strconv.Itoa(port), version: ver}
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(r.done)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: r.addr})
	defer rdb.Close()
	for i := 0; ; i++ {
		if err := rdb.Ping(ctx).Err(); err == nil {
			return r, nil
		} else if i > 500 || ctx.Err() != nil {
			r.stop()
			return nil, fmt.Errorf("redis-server did not answer: %v; %s", err, tail(filepath.Join(dir, "redis.log")))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *redisInst) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
	}
}
