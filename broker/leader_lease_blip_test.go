package broker

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// stallProxy forwards TCP connections to a NATS server; while stalled it
// forwards nothing in either direction (a frozen network path or a paused
// process: the bytes wait in the socket buffers and arrive once it resumes).
type stallProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	gate   chan struct{} // closed while flowing
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
			}
			_ = dst.Close()
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
	p.mu.Unlock()
}

func (p *stallProxy) close() {
	p.resume()
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestLeaderSurvivesARenewalWhoseAckIsLate: the leader's network stalls
// for 300 ms, well under its lease (500 ms, valid 450 ms after each
// renewal), and no other broker runs. A renewal sent during the stall is
// stored, but its acknowledgement comes after the renewal's timeout. The
// leader must go on leading: nobody else took the key (§14.2: "three lost
// renewals in a row are survived").
func TestLeaderSurvivesARenewalWhoseAckIsLate(t *testing.T) {
	url := foServer(t)
	p := newStallProxy(t, url[len("nats://"):])
	leader := foLeader(t, p.url())
	time.Sleep(300 * time.Millisecond)
	p.stall()
	time.Sleep(300 * time.Millisecond)
	p.resume()
	time.Sleep(time.Second)
	select {
	case <-leader.Done():
		t.Fatalf("the only broker stopped leading after a 300 ms stall of its network (lease 500 ms): %v", leader.Err())
	default:
	}
	if !leader.leading() {
		t.Fatal("the only broker's lease is not valid a second after a 300 ms stall")
	}
}

// TestStandbyTakesOverAfterTheExpiryMarkerLapsed: the leader dies (its
// connection closes without a release) while the standby's network is
// stalled for 3 s. Meanwhile the leader key expires (its TTL, 1 s), the
// server writes the expiry marker, and the marker lapses too (the bucket's
// marker TTL, 1 s). When the standby's network flows again it must take
// the lease over: nobody else will ever write the key.
func TestStandbyTakesOverAfterTheExpiryMarkerLapsed(t *testing.T) {
	url := foServer(t)
	leaderConnURL := url
	p := newStallProxy(t, url[len("nats://"):])
	leader := foBroker(t, leaderConnURL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := leader.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leader.Stop() })
	standby := foBroker(t, p.url())
	sctx, scancel := context.WithCancel(context.Background())
	started := make(chan error, 1)
	go func() { started <- standby.Start(sctx) }()
	t.Cleanup(func() {
		scancel()
		<-started
		_ = standby.Stop()
	})
	if !foWait(10*time.Second, func() bool { return standby.Role() == messages.RoleStandby }) {
		t.Fatal("the second broker did not stand by")
	}
	time.Sleep(300 * time.Millisecond)
	p.stall()
	leader.nc.Close() // the leader dies: no release
	time.Sleep(3 * time.Second)
	p.resume()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("the standby's Start failed: %v", err)
		}
		started <- nil
	case <-time.After(6 * time.Second):
		_, kerr := standby.kv.Get(context.Background(), messages.LeaderKey)
		st, _ := standby.js.Stream(context.Background(), "KV_"+messages.DefaultBucket)
		t.Fatalf("the standby did not take over within 6 s after its network flowed again (role %q; the leader key now: %v; bucket last seq %d): the leader is dead and nobody else writes the key",
			standby.Role(), kerr, st.CachedInfo().State.LastSeq)
	}
}
