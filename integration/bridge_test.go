package integration

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// bridge is a TCP forwarder on 127.0.0.1:random to a target address, which a
// test can cut to simulate a network partition: Cut closes every connection
// it carries and refuses new ones (each is accepted and closed at once, so
// the dialer sees the peer hang up, as after a reset) until Restore. The
// cluster harness puts one bridge on each directed route between two nodes.
//
// Both directions are copied with io.Copy; when either side ends (EOF, error,
// Cut, Close) both connections are closed, so nothing half-open lingers.
// Every method is safe for concurrent use; Close waits for every goroutine.
type bridge struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	closed bool
	pairs  map[*bridgePair]struct{}

	wg sync.WaitGroup
}

// bridgePair is one forwarded connection: the accepted side and the dialed one.
type bridgePair struct {
	in, out net.Conn
	once    sync.Once
}

func (p *bridgePair) close() {
	p.once.Do(func() {
		_ = p.in.Close()
		_ = p.out.Close()
	})
}

// newBridge listens on 127.0.0.1:0 and forwards each accepted connection to
// target. It is closed when the test ends.
func newBridge(t testing.TB, target string) *bridge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("bridge listen: %v", err)
	}
	b := &bridge{ln: ln, target: target, pairs: make(map[*bridgePair]struct{})}
	b.wg.Add(1)
	go b.acceptLoop()
	t.Cleanup(b.Close)
	return b
}

// Addr is the host:port the bridge listens on.
func (b *bridge) Addr() string { return b.ln.Addr().String() }

// Cut closes every connection the bridge carries and refuses new ones until
// Restore.
func (b *bridge) Cut() {
	b.mu.Lock()
	b.cut = true
	pairs := b.takePairs()
	b.mu.Unlock()
	for _, p := range pairs {
		p.close()
	}
}

// Restore lets new connections through again after Cut.
func (b *bridge) Restore() {
	b.mu.Lock()
	b.cut = false
	b.mu.Unlock()
}

// active is the number of connections the bridge carries now.
func (b *bridge) active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pairs)
}

// Close stops listening, closes every connection and waits for the
// bridge's goroutines. It may be called more than once.
func (b *bridge) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return
	}
	b.closed = true
	pairs := b.takePairs()
	b.mu.Unlock()
	_ = b.ln.Close()
	for _, p := range pairs {
		p.close()
	}
	b.wg.Wait()
}

// takePairs empties the set of connections and returns them. b.mu is held.
func (b *bridge) takePairs() []*bridgePair {
	out := make([]*bridgePair, 0, len(b.pairs))
	for p := range b.pairs {
		out = append(out, p)
		delete(b.pairs, p)
	}
	return out
}

func (b *bridge) refusing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cut || b.closed
}

func (b *bridge) acceptLoop() {
	defer b.wg.Done()
	for {
		in, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error (a connection reset in the backlog)
		}
		if b.refusing() {
			_ = in.Close()
			continue
		}
		b.wg.Add(1)
		go b.forward(in)
	}
}

func (b *bridge) forward(in net.Conn) {
	defer b.wg.Done()
	out, err := net.DialTimeout("tcp", b.targetAddr(), 2*time.Second)
	if err != nil {
		_ = in.Close() // the target is down: the dialer sees a hang-up
		return
	}
	p := &bridgePair{in: in, out: out}
	b.mu.Lock()
	if b.cut || b.closed { // cut while dialing
		b.mu.Unlock()
		p.close()
		return
	}
	b.pairs[p] = struct{}{}
	b.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(out, in)
		p.close()
	}()
	_, _ = io.Copy(in, out)
	p.close()
	<-done

	b.mu.Lock()
	delete(b.pairs, p)
	b.mu.Unlock()
}

// TestBridgeCutClosesAndRefusesConnections checks the bridge itself against
// a line echo server: it forwards both ways, Cut closes a live connection
// and refuses new ones, Restore lets them through again, and Close ends
// every goroutine (TestMain's leak check would catch one left behind).
func TestBridgeCutClosesAndRefusesConnections(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var echoWG sync.WaitGroup
	echoWG.Add(1)
	go func() {
		defer echoWG.Done()
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			echoWG.Add(1)
			go func() {
				defer echoWG.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { _ = echo.Close(); echoWG.Wait() })

	b := newBridge(t, echo.Addr().String())

	roundTrip := func(c net.Conn, r *bufio.Reader, line string) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, line+"\n"); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if got != line+"\n" {
			t.Fatalf("echo through the bridge: got %q, want %q", got, line)
		}
		return nil
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatalf("dial bridge: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, bufio.NewReader(c)
	}

	c1, r1 := dial()
	if err := roundTrip(c1, r1, "hello"); err != nil {
		t.Fatalf("before Cut: %v", err)
	}
	if n := b.active(); n != 1 {
		t.Fatalf("active connections = %d, want 1", n)
	}

	b.Cut()
	if err := roundTrip(c1, r1, "after cut"); err == nil {
		t.Fatal("a connection carried across Cut still works")
	}
	c2, r2 := dial() // accepted by the kernel, then closed by the bridge
	if err := roundTrip(c2, r2, "while cut"); err == nil {
		t.Fatal("a connection made while cut works")
	}
	eventually(t, 5*time.Second, "the cut bridge to carry no connection", func() bool { return b.active() == 0 })

	b.Restore()
	c3, r3 := dial()
	if err := roundTrip(c3, r3, "restored"); err != nil {
		t.Fatalf("after Restore: %v", err)
	}

	b.Close()
	if err := roundTrip(c3, r3, "after close"); err == nil {
		t.Fatal("a connection works after Close")
	}
	if _, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		t.Fatal("the closed bridge still accepts")
	}
}

// setTarget changes where new connections go (an empty target hangs them up).
func (b *bridge) setTarget(target string) {
	b.mu.Lock()
	b.target = target
	b.mu.Unlock()
}

func (b *bridge) targetAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.target
}
