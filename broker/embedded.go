package broker

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSConfig configures an embedded nats-server with JetStream.
type NATSConfig struct {
	// Listen is the client address, HOST:PORT; port 0 or "" picks a free port on 127.0.0.1.
	Listen string
	// StoreDir is the JetStream store directory (required).
	StoreDir string
	// SyncInterval is how often JetStream fsyncs (0: the server's default, 2 minutes).
	SyncInterval time.Duration
	// SyncAlways makes JetStream fsync every write before acknowledging it.
	SyncAlways bool
	// ServerName names the server (default "slotbroker").
	ServerName string
}

// StartNATS starts an embedded nats-server with JetStream and waits until it
// takes connections. The caller shuts it down with Shutdown and WaitForShutdown.
func StartNATS(cfg NATSConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, configErr("nats store directory is empty: give a data directory")
	}
	host, port := "127.0.0.1", -1
	if cfg.Listen != "" {
		h, p, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, configErr("listen address %q: %v (use HOST:PORT)", cfg.Listen, err)
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			return nil, configErr("listen address %q: port must be 0 to 65535", cfg.Listen)
		}
		if h != "" {
			host = h
		}
		if n != 0 {
			port = n
		}
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, configErr("data directory %q cannot be created: %v", cfg.StoreDir, err)
	}
	if f, err := os.CreateTemp(cfg.StoreDir, ".probe-*"); err != nil {
		return nil, configErr("data directory %q is not writable: %v", cfg.StoreDir, err)
	} else {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	if port > 0 {
		// nats-server would log and exit the process on a taken port; check first.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("%w: cannot listen on %s: %v (is another server running? use --listen to pick another address)", ErrUnavailable, net.JoinHostPort(host, strconv.Itoa(port)), err)
		}
		_ = ln.Close()
	}
	name := cfg.ServerName
	if name == "" {
		name = "slotbroker"
	}
	s, err := server.NewServer(&server.Options{
		ServerName: name, Host: host, Port: port, JetStream: true, StoreDir: cfg.StoreDir,
		SyncInterval: cfg.SyncInterval, SyncAlways: cfg.SyncAlways, NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, configErr("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("%w: embedded nats server did not start within 10s", ErrUnavailable)
	}
	return s, nil
}

// ServerInterest reports whether s, a server started by StartNATS (one
// server, no accounts), has a subscriber for a subject; for WithEventInterest.
func ServerInterest(s *server.Server) func(subject string) bool {
	return s.GlobalAccount().SubscriptionInterest
}
