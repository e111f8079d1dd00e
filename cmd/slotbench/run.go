package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/slotbroker/slotbroker/broker"
	"github.com/slotbroker/slotbroker/client"
)

// config is the command line.
type config struct {
	quick      bool
	only       map[string]bool
	out        string
	dur        time.Duration
	warm       time.Duration
	inproc     bool
	noPeer     bool
	bin        string
	cpuprofile string
	memprofile string
	limitsF    int // scenario f: limits
	leasesF    int // scenario f: held leases
	memN       int // scenario g: leases and waiters each
	waitersD   []int
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("slotbench", flag.ContinueOnError)
	var c config
	var only string
	fs.BoolVar(&c.quick, "quick", false, "shorter runs and smaller counts (about a minute)")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run (a,b,c,d,e,f,g); the floor always runs")
	fs.StringVar(&c.out, "out", "", "also write the results as JSON to this file")
	fs.DurationVar(&c.dur, "duration", 0, "measurement window per case (default 2s, 700ms with --quick)")
	fs.BoolVar(&c.noPeer, "no-redis", false, "skip the Redis peer (e.g. to profile only slotbroker)")
	fs.BoolVar(&c.inproc, "inproc", false, "run the broker inside the bench process (for --cpuprofile) instead of the slotbroker binary")
	fs.StringVar(&c.bin, "slotbroker", "", "use this slotbroker binary instead of building ./cmd/slotbroker")
	fs.BoolVar(&brokerSyncAlways, "sync-always", false, "run the slotbroker daemon with --sync-always (fsync every append) instead of --sync-interval 1s")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the bench process (with --inproc it includes the broker)")
	fs.StringVar(&c.memprofile, "memprofile", "", "scenario g: write a heap profile of the bench process once the leases and waiters are in (use with --inproc)")
	fs.IntVar(&c.limitsF, "restart-limits", 0, "scenario f: limits (default 10000, 1000 with --quick)")
	fs.IntVar(&c.leasesF, "restart-leases", 0, "scenario f: held leases (default 100000, 10000 with --quick)")
	fs.IntVar(&c.memN, "mem-count", 0, "scenario g: held leases and queued waiters, each (default 50000, 10000 with --quick)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	def := func(v *int, full, quick int) {
		if *v <= 0 {
			*v = full
			if c.quick {
				*v = quick
			}
		}
	}
	def(&c.limitsF, 10000, 1000)
	def(&c.leasesF, 100000, 10000)
	def(&c.memN, 50000, 10000)
	if c.dur <= 0 {
		c.dur = 2 * time.Second
		if c.quick {
			c.dur = 700 * time.Millisecond
		}
	}
	c.warm = c.dur / 5
	c.waitersD = []int{10, 1000, 10000}
	if only != "" {
		c.only = map[string]bool{}
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(strings.ToLower(s))
			if !strings.Contains("abcdefg", s) || len(s) != 1 {
				return c, fmt.Errorf("--only: unknown scenario %q (use letters a to g)", s)
			}
			c.only[s] = true
		}
	}
	if c.cpuprofile != "" && !c.inproc {
		fmt.Fprintln(os.Stderr, "slotbench: note: without --inproc the CPU profile holds only the clients, not the broker")
	}
	return c, nil
}

// env is what the scenarios share: the servers and connections.
type env struct {
	cfg   config
	tmp   string
	bin   string      // slotbroker binary ("" in-process)
	sb    *brokerInst // the broker of scenarios a to e
	floor *server.Server
	redis *redisInst
	rdb   *redis.Client // nil when the peer is skipped
	rep   *report
	// floor figures, for the ratios
	echoRemote, echoLocal stats
	// pingBroker is a no-work round trip to the slotbroker process.
	pingBroker stats
	conns      []*nats.Conn
}

// scenario is one lettered benchmark.
type scenario struct {
	id   string
	name string
	run  func(ctx context.Context, e *env) error
}

var scenarios = []scenario{
	{"a", "uncontended cycle", scenarioA},
	{"b", "64-client throughput", scenarioB},
	{"c", "handoff latency", scenarioC},
	{"d", "wake cost", scenarioD},
	{"e", "rate admission", scenarioE},
	{"f", "restart recovery", scenarioF},
	{"g", "memory", scenarioG},
}

func run(args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	tmp, err := os.MkdirTemp("", "slotbench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	e := &env{cfg: cfg, tmp: tmp, rep: &report{}}
	defer e.close()
	if err := e.setup(ctx); err != nil {
		return err
	}
	logf("floor: NATS echo and KV put")
	if err := floor(ctx, e); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	for _, s := range scenarios {
		if cfg.only != nil && !cfg.only[s.id] {
			continue
		}
		logf("scenario %s: %s", s.id, s.name)
		t0 := time.Now()
		if err := s.run(ctx, e); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted during scenario %s", s.id)
			}
			e.rep.add(row{Scenario: s.id, Case: "failed", System: "slotbench", Note: err.Error()})
			logf("scenario %s failed: %v", s.id, err)
			continue
		}
		logf("scenario %s done in %v", s.id, time.Since(t0).Round(time.Millisecond))
	}
	e.rep.writeMarkdown(stdout)
	if cfg.out != "" {
		if err := e.rep.writeJSON(cfg.out); err != nil {
			return err
		}
	}
	return nil
}

// logf prints progress to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "slotbench %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// setup builds and starts the servers and fills the report's header.
func (e *env) setup(ctx context.Context) error {
	h := &e.rep.Header
	h.Date = time.Now().Format(time.RFC3339)
	h.Command = "go run ./cmd/slotbench"
	if len(os.Args) > 1 {
		h.Command += " " + strings.Join(os.Args[1:], " ")
	}
	h.Nproc = runtime.NumCPU()
	h.CPU = cpuModel()
	h.Go = runtime.Version()
	h.NATSServer = server.VERSION
	h.NATSGo = nats.Version
	h.Notes = append(h.Notes,
		"× floor: a: p50 ÷ (2 × no-work request p50: a cycle is two requests); b: cycles/s ÷ (no-work requests/s at 64 clients ÷ 2); c: p50 ÷ NATS echo p50 (other process); d: msgs ÷ msgs at the fewest waiters; e: admissions/s ÷ no-work requests/s at the same clients",
		"no-work request: $SRV.PING answered by the micro service inside the slotbroker process, the cheapest possible round trip to the broker",
		"× peer: a: p50 ÷ Redis p50; b, e: ops/s ÷ Redis ops/s (for the no-work rows: what one request per cycle or admission could reach at best)",
		fmt.Sprintf("c: holders hold %v; the poller retries after a jittered %v-%v sleep; b hot limit: the Redis caller retries after a jittered 0-%v sleep", cHold, cPollMin, cPollMax, bRedisBackoff))
	h.Durability = fmt.Sprintf("JetStream file store, sync_interval %v; Redis appendonly yes, appendfsync everysec, no RDB", syncInterval)

	if !e.cfg.inproc {
		e.bin = e.cfg.bin
		if e.bin == "" {
			e.bin = filepath.Join(e.tmp, "slotbroker")
			logf("building ./cmd/slotbroker")
			cmd := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/slotbroker")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/slotbroker (run from the module root, or pass --inproc): %v\n%s", err, out)
			}
		}
		h.Broker = "slotbroker binary as a separate process (embedded nats-server), clients in the bench process"
	} else {
		h.Broker = "broker in the bench process (--inproc): embedded nats-server and broker.New in-process"
	}
	var err error
	if e.sb, err = newBroker(e.bin, e.tmp, "main"); err != nil {
		return err
	}
	if _, err := e.sb.start(ctx, "probe"); err != nil {
		return err
	}
	if e.floor, err = broker.StartNATS(broker.NATSConfig{StoreDir: filepath.Join(e.tmp, "floor"), SyncInterval: syncInterval}); err != nil {
		return fmt.Errorf("floor nats-server: %w", err)
	}
	for i := 0; i < 8; i++ {
		nc, err := nats.Connect(e.sb.URL(), nats.Name(fmt.Sprintf("slotbench-%d", i)))
		if err != nil {
			return err
		}
		e.conns = append(e.conns, nc)
	}
	r, err := startRedis(ctx, filepath.Join(e.tmp, "redis"))
	if err == nil && e.cfg.noPeer {
		r.stop()
		err = errors.New("--no-redis: the Redis peer is skipped")
	}
	if err != nil {
		h.Redis = "absent"
		h.Notes = append(h.Notes, "peer skipped: "+err.Error())
		logf("%v", err)
	} else {
		e.redis = r
		h.Redis = r.version
		e.rdb = redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: 64, MinIdleConns: 8})
	}
	return nil
}

// close stops everything setup started.
func (e *env) close() {
	for _, nc := range e.conns {
		nc.Close()
	}
	if e.rdb != nil {
		e.rdb.Close()
	}
	if e.redis != nil {
		e.redis.stop()
	}
	if e.sb != nil {
		e.sb.stop()
	}
	if e.floor != nil {
		e.floor.Shutdown()
		e.floor.WaitForShutdown()
	}
}

// clients returns n clients over the shared connections (client i on
// connection i%8).
func (e *env) clients(n int) ([]*client.Client, func(), error) {
	var cs []*client.Client
	closeAll := func() {
		for _, c := range cs {
			c.Close()
		}
	}
	for i := range n {
		c, err := client.New(e.conns[i%len(e.conns)], client.WithLogger(quiet))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		cs = append(cs, c)
	}
	return cs, closeAll, nil
}

// connect opens n new connections to url; the returned func closes them.
func connect(url string, n int, name string) ([]*nats.Conn, func(), error) {
	var out []*nats.Conn
	closeAll := func() {
		for _, nc := range out {
			nc.Close()
		}
	}
	for i := range n {
		nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("%s-%d", name, i)))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		out = append(out, nc)
	}
	return out, closeAll, nil
}

// ensureLimit creates a limit, or leaves an existing one.
func ensureLimit(ctx context.Context, c *client.Client, name string, slots int, opts ...client.LimitOption) error {
	_, err := c.CreateLimit(ctx, name, slots, opts...)
	if errors.Is(err, client.ErrExists) {
		return nil
	}
	return err
}
