package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterBound bounds every wait of the cluster harness: forming, a
// restart catching up, an election.
const clusterBound = 30 * time.Second

// cluster is an in-process NATS cluster with JetStream for failover tests:
// n nats-server instances in this process on loopback, named "n1".."nN", in
// the cluster "sb", each with its own store dir and a random client port.
//
// Every route goes through a bridge of ours: node i's only configured routes
// are the bridges i→j (one per other node j, each forwarding to j's cluster
// port), so Partition(i) cuts node i off by cutting the bridges to and from
// it. Two settings keep the routes on the bridges:
//   - Cluster.Advertise is, for each node, a loopback port that is bound but
//     never listens (dials to it are refused). A server that learns of a
//     peer by gossip instead of by its configured routes would otherwise
//     dial that peer's real cluster port and open a route around the
//     bridges (at startup, after a Heal), which a later Partition would not
//     cut: without it TestPartitionedNodeCannotCommitWrites fails.
//   - Cluster.NoAdvertise: a client connected to URL(i) is not told about
//     the other nodes, so it stays on node i (and comes back to it after a
//     Restart, which keeps the port) instead of wandering off.
//
// Kill, Stop, Restart and Partition/Heal fail the test given to startCluster
// if something goes wrong, so call them from that test's goroutine. Set
// SLOTBROKER_CLUSTER_LOG=1 to get the servers' notices, warnings and errors
// in the test log.
type cluster struct {
	t testing.TB

	mu      sync.Mutex
	nodes   []*clusterNode
	bridges [][]*bridge // bridges[i][j] carries the routes node i dials to node j; nil when i == j
}

type clusterNode struct {
	name        string
	storeDir    string
	clientPort  int // -1 until the first start picks one
	clusterPort int
	advertise   string   // bound, never listening: gossip about this node leads nowhere
	routes      []string // the bridges i→j
	srv         *server.Server
	down        bool // killed or stopped
	partitioned bool
}

// startCluster starts n nodes (n ≥ 2; use 3) and waits until every one is
// ready for connections, each has caught up with the JetStream meta leader,
// and an R3 (or Rn for n < 3) stream can be created and deleted. Everything
// is shut down when the test ends.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("startCluster: need at least 2 nodes, got %d", n)
	}
	c := &cluster{t: t}
	for i := range n {
		c.nodes = append(c.nodes, &clusterNode{
			name:        fmt.Sprintf("n%d", i+1),
			storeDir:    t.TempDir(),
			clientPort:  -1,
			clusterPort: clusterFreePort(t),
			advertise:   clusterRefusingAddr(t),
		})
	}
	c.bridges = make([][]*bridge, n)
	for i := range n {
		c.bridges[i] = make([]*bridge, n)
		for j := range n {
			if i == j {
				continue
			}
			b := newBridge(t, fmt.Sprintf("127.0.0.1:%d", c.nodes[j].clusterPort))
			c.bridges[i][j] = b
			c.nodes[i].routes = append(c.nodes[i].routes, b.Addr())
		}
	}
	t.Cleanup(c.shutdown) // runs before the bridges' own cleanups (registered earlier)

	for i := range n {
		srv, err := c.newServer(i)
		if err != nil {
			t.Fatalf("cluster: %v", err)
		}
		c.nodes[i].srv = srv
		srv.Start()
	}
	for i := range n {
		c.ready(i)
		c.nodes[i].clientPort = c.nodes[i].srv.Addr().(*net.TCPAddr).Port
	}
	for i := range n {
		c.waitCurrent(t, i)
	}
	c.waitStreamsPlaceable(t)
	return c
}

// newServer builds (does not start) node i's server from its fixed settings.
func (c *cluster) newServer(i int) (*server.Server, error) {
	nd := c.nodes[i]
	var routes []*url.URL
	for _, r := range nd.routes {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: r})
	}
	opts := &server.Options{
		ServerName: nd.name,
		Host:       "127.0.0.1",
		Port:       nd.clientPort,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   nd.storeDir,
		Cluster: server.ClusterOpts{
			Name:        "sb",
			Host:        "127.0.0.1",
			Port:        nd.clusterPort,
			Advertise:   nd.advertise,
			NoAdvertise: true,
		},
		Routes: routes,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new server %s: %w", nd.name, err)
	}
	if os.Getenv("SLOTBROKER_CLUSTER_LOG") != "" {
		srv.SetLogger(clusterLogger{t: c.t, name: nd.name}, false, false)
	}
	return srv, nil
}

// ready waits until node i is ready for connections. A node whose cluster
// port was taken meanwhile (it was free when picked: a test of another
// package running at the same time may bind it) never gets ready: it is
// started again on a new port, and the bridges to it follow.
func (c *cluster) ready(i int) {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		srv := c.nodes[i].srv
		c.mu.Unlock()
		if srv.ReadyForConnections(10 * time.Second) {
			return
		}
		if attempt == 3 {
			c.t.Fatalf("cluster: %s not ready for connections after %d starts", c.nodes[i].name, attempt+1)
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		c.mu.Lock()
		nd := c.nodes[i]
		nd.clusterPort = clusterFreePort(c.t)
		for j := range c.nodes {
			if b := c.bridges[j][i]; b != nil {
				b.setTarget(fmt.Sprintf("127.0.0.1:%d", nd.clusterPort))
			}
		}
		next, err := c.newServer(i)
		if err != nil {
			c.mu.Unlock()
			c.t.Fatalf("cluster: %v", err)
		}
		nd.srv = next
		c.mu.Unlock()
		next.Start()
	}
}

// Size is the number of nodes.
func (c *cluster) Size() int { return len(c.nodes) }

// Name is node i's server name ("n1" for node 0).
func (c *cluster) Name(i int) string { return c.nodes[i].name }

// URL is node i's client URL. It stays the same across Kill and Restart.
func (c *cluster) URL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].clientPort)
}

// URLs is every node's client URL, comma separated (for nats.Connect, or a
// daemon's --nats flag), so a client fails over between nodes.
func (c *cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Server is node i's running server, nil while it is down.
func (c *cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Conn connects to node i only (closed when the test ends). It reconnects
// forever, to node i only, so it is back after a Restart(i).
func (c *cluster) Conn(t testing.TB, i int, opts ...nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{
		nats.Name(fmt.Sprintf("test-%s", c.nodes[i].name)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
	}, opts...)
	nc, err := nats.Connect(c.URL(i), all...)
	if err != nil {
		t.Fatalf("connect to %s: %v", c.nodes[i].name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Kill takes node i down as abruptly as an in-process test can, the closest
// it gets to a SIGKILL: it first cuts node i's bridges, then calls Shutdown
// and WaitForShutdown. A plain Shutdown is polite: it steps down the Raft
// groups node i leads and hands their leadership over in milliseconds; with
// the routes cut first, those messages reach nobody, so the other nodes
// notice the loss only when heartbeats stop and elect a new leader after the
// election timeout, as after a crash. What it cannot imitate: Shutdown still
// closes the node's files cleanly (a SIGKILL loses what was not written
// from the process), and clients see their connection closed at once (after
// a real crash, or a dead machine, they may wait for a timeout).
func (c *cluster) Kill(i int) {
	c.down(i, true)
}

// Stop shuts node i down gracefully (it hands over the leaderships it holds).
func (c *cluster) Stop(i int) {
	c.down(i, false)
}

func (c *cluster) down(i int, isolate bool) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.nodes[i]
	srv := nd.srv
	if srv == nil {
		c.mu.Unlock()
		c.t.Fatalf("cluster: %s is already down", nd.name)
	}
	nd.down = true
	nd.srv = nil
	if isolate {
		c.applyBridgesLocked()
	}
	c.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
	if !isolate {
		c.mu.Lock()
		c.applyBridgesLocked()
		c.mu.Unlock()
	}
}

// Restart starts node i again after Kill or Stop, with the same name, store
// dir, ports and routes, and waits until it is ready for connections and,
// unless it is partitioned, has caught up with the JetStream meta leader.
func (c *cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.nodes[i]
	if nd.srv != nil {
		c.mu.Unlock()
		c.t.Fatalf("cluster: Restart(%d): %s is running", i, nd.name)
	}
	srv, err := c.newServer(i)
	if err != nil {
		c.mu.Unlock()
		c.t.Fatalf("cluster: %v", err)
	}
	nd.srv = srv
	nd.down = false
	c.applyBridgesLocked() // open before Start: its first route dials go through at once
	partitioned := nd.partitioned
	c.mu.Unlock()

	srv.Start()
	c.ready(i)
	if !partitioned {
		c.waitCurrent(c.t, i)
	}
}

// Partition cuts every bridge to and from node i: it closes the route
// connections they carry and refuses new ones until Heal(i). Clients
// connected to node i stay connected to it. The servers see their routes
// close at once, where a network silently dropping packets would leave them
// waiting for their route ping timeouts first.
func (c *cluster) Partition(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].partitioned = true
	c.applyBridgesLocked()
}

// Heal undoes Partition(i). The routes come back within about a second (the
// servers' reconnect delay); it does not wait for them.
func (c *cluster) Heal(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].partitioned = false
	c.applyBridgesLocked()
}

// applyBridgesLocked opens the bridge i→j iff neither node is partitioned
// and neither is down (Kill keeps a dying node's goodbyes in). c.mu is held.
func (c *cluster) applyBridgesLocked() {
	for i, row := range c.bridges {
		for j, b := range row {
			if b == nil {
				continue
			}
			a, z := c.nodes[i], c.nodes[j]
			if a.partitioned || z.partitioned || a.down || z.down {
				b.Cut()
			} else {
				b.Restore()
			}
		}
	}
}

// reachable reports whether node i is running and not partitioned.
func (c *cluster) reachable(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv != nil && !c.nodes[i].partitioned
}

// index is the node index of the server named name, -1 if none.
func (c *cluster) index(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	return -1
}

// StreamLeader is the index of the node leading the named stream (in the
// global account), from a StreamInfo's Cluster.Leader asked through a
// reachable node, confirmed by that node's own view. It polls until a leader
// is known (after a Kill, until one is elected), failing t after clusterBound.
func (c *cluster) StreamLeader(t testing.TB, stream string) int {
	t.Helper()
	var last string
	deadline := time.Now().Add(clusterBound)
	for {
		for j := range c.nodes {
			if !c.reachable(j) {
				continue
			}
			name, err := c.streamLeaderVia(j, stream)
			if err != nil {
				last = fmt.Sprintf("via %s: %v", c.nodes[j].name, err)
				continue
			}
			i := c.index(name)
			if i < 0 || !c.reachable(i) {
				last = fmt.Sprintf("via %s: leader %q is not a reachable node", c.nodes[j].name, name)
				continue
			}
			if srv := c.Server(i); srv == nil || !srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				last = fmt.Sprintf("via %s: %s named leader but does not lead", c.nodes[j].name, name)
				continue
			}
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster: no leader for stream %s within %v (%s)", stream, clusterBound, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *cluster) streamLeaderVia(j int, stream string) (string, error) {
	nc, err := nats.Connect(c.URL(j), nats.NoReconnect(), nats.Timeout(time.Second))
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("no leader yet")
	}
	return info.Cluster.Leader, nil
}

// MetaLeader is the index of the JetStream meta leader: a reachable node
// that says it leads and that every other reachable node names as leader.
// It polls until there is one, failing t after clusterBound.
func (c *cluster) MetaLeader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(clusterBound)
	for {
		if i := c.metaLeader(); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster: no agreed JetStream meta leader within %v", clusterBound)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *cluster) metaLeader() int {
	leader := -1
	for i := range c.nodes {
		if srv := c.Server(i); srv != nil && c.reachable(i) && srv.JetStreamIsLeader() {
			if leader >= 0 {
				return -1 // two claim it: an old leader has not stepped down yet
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1
	}
	for j := range c.nodes {
		srv := c.Server(j)
		if srv == nil || !c.reachable(j) {
			continue
		}
		jsz, err := srv.Jsz(nil)
		if err != nil || jsz.Meta == nil || jsz.Meta.Leader != c.nodes[leader].name {
			return -1
		}
	}
	return leader
}

// StreamLastSeq is the last sequence of the named stream (global account)
// in node i's own replica, and whether node i has that stream; use it to
// see a replica catch up. Node i must be running.
func (c *cluster) StreamLastSeq(t testing.TB, i int, stream string) (uint64, bool) {
	t.Helper()
	srv := c.Server(i)
	if srv == nil {
		t.Fatalf("cluster: StreamLastSeq(%d): %s is down", i, c.nodes[i].name)
	}
	jsz, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatalf("cluster: jsz of %s: %v", c.nodes[i].name, err)
	}
	for _, acc := range jsz.AccountDetails {
		if acc.Name != server.DEFAULT_GLOBAL_ACCOUNT {
			continue
		}
		for _, sd := range acc.Streams {
			if sd.Name == stream {
				return sd.State.LastSeq, true
			}
		}
	}
	return 0, false
}

// waitCurrent waits until node i is ready and its JetStream meta layer is
// current (caught up with a leader it knows).
func (c *cluster) waitCurrent(t testing.TB, i int) {
	t.Helper()
	deadline := time.Now().Add(clusterBound)
	for {
		srv := c.Server(i)
		if srv == nil {
			t.Fatalf("cluster: %s went down while waiting for it", c.nodes[i].name)
		}
		if srv.JetStreamIsCurrent() {
			if jsz, err := srv.Jsz(nil); err == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster: %s's JetStream not current within %v", c.nodes[i].name, clusterBound)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitStreamsPlaceable polls until a replicated stream can be created (and
// deleted) through node 0: every node's JetStream is known to the meta leader.
func (c *cluster) waitStreamsPlaceable(t testing.TB) {
	t.Helper()
	nc, err := nats.Connect(c.URL(0), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("cluster: connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("cluster: jetstream: %v", err)
	}
	cfg := jetstream.StreamConfig{
		Name:     "SB_HARNESS_PROBE",
		Subjects: []string{"sbharness.probe"},
		Replicas: min(len(c.nodes), 3),
		Storage:  jetstream.MemoryStorage,
	}
	var last error
	deadline := time.Now().Add(clusterBound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, last = js.CreateStream(ctx, cfg)
		if last == nil {
			last = js.DeleteStream(ctx, cfg.Name)
		}
		cancel()
		if last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster: an R%d stream cannot be placed within %v: %v", cfg.Replicas, clusterBound, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shutdown stops every running node (in parallel) once the bridges are cut,
// so that no node spends the teardown electing leaders.
func (c *cluster) shutdown() {
	c.mu.Lock()
	var srvs []*server.Server
	for _, nd := range c.nodes {
		nd.down = true
		if nd.srv != nil {
			srvs = append(srvs, nd.srv)
			nd.srv = nil
		}
	}
	c.applyBridgesLocked()
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
	}
	wg.Wait()
}

// clusterRefusingAddr is a loopback address whose port is bound until the
// test ends but never listens: the kernel refuses every dial to it at once,
// and nothing else can take the port meanwhile.
func clusterRefusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// clusterLogger sends a server's notices, warnings and errors to the test log.
type clusterLogger struct {
	t    testing.TB
	name string
}

func (l clusterLogger) log(level, format string, v ...any) {
	l.t.Logf("[%s %s] %s", l.name, level, fmt.Sprintf(format, v...))
}

func (l clusterLogger) Noticef(format string, v ...any) { l.log("INF", format, v...) }
func (l clusterLogger) Warnf(format string, v ...any)   { l.log("WRN", format, v...) }
func (l clusterLogger) Fatalf(format string, v ...any)  { l.log("FTL", format, v...) }
func (l clusterLogger) Errorf(format string, v ...any)  { l.log("ERR", format, v...) }
func (l clusterLogger) Debugf(format string, v ...any)  { l.log("DBG", format, v...) }
func (l clusterLogger) Tracef(format string, v ...any)  { l.log("TRC", format, v...) }

// clusterFreePort is a loopback TCP port that was free a moment ago (a node's
// cluster port: the bridges must know it before the node starts; ready
// starts a node again on another one if it was taken meanwhile).
func clusterFreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
