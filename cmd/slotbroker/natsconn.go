package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// connectTimeout bounds the first connection to an external NATS server.
const connectTimeout = 5 * time.Second

// natsOptions returns the options of the broker's connection: credentials
// and TLS from cfg (checked here, so errors name the file), the inbox prefix,
// a bounded first connect, then endless reconnects with the events logged.
// Only a fatal error (e.g. the same authorization error twice in a row)
// closes the connection for good; the daemon then exits 69.
func natsOptions(cfg *Config, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("slotbroker"),
		nats.Timeout(connectTimeout),
		nats.RetryOnFailedConnect(false),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("NATS error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("NATS error", "err", err)
		}),
	}
	if cfg.InboxPrefix != "" {
		if err := checkInboxPrefix(cfg.InboxPrefix, true); err != nil {
			return nil, err
		}
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Creds != "" {
		if err := checkReadable(flagCreds, cfg.Creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.NKey != "" {
		if err := checkReadable(flagNKey, cfg.NKey); err != nil {
			return nil, err
		}
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return nil, configErr("--nkey %s: not an nkey seed file: %v", cfg.NKey, err)
		}
		opts = append(opts, o)
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// tlsConfig loads --tlsca, --tlscert and --tlskey; nil when none is given.
func tlsConfig(cfg *Config) (*tls.Config, error) {
	if cfg.TLSCA == "" && cfg.TLSCert == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := readFile(flagTLSCA, cfg.TLSCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, configErr("--tlsca %s: no PEM certificate in the file", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCert != "" {
		certPEM, err := readFile(flagTLSCert, cfg.TLSCert)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readFile(flagTLSKey, cfg.TLSKey)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, configErr("--tlscert %s and --tlskey %s: %v", cfg.TLSCert, cfg.TLSKey, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func readFile(flag, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr("--%s: %v", flag, describeFileErr(path, err))
	}
	return data, nil
}

func checkReadable(flag, path string) error {
	_, err := readFile(flag, path)
	return err
}

// describeFileErr says what is wrong with a file in a few words.
func describeFileErr(path string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("file %s does not exist", path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("file %s is not readable", path)
	}
	return err.Error()
}

// connectErr classifies a failed first connection: refused credentials are
// configuration (78), everything else is an unavailable server (69).
func connectErr(url string, err error) error {
	msg := err.Error()
	if authError(err) {
		return configErr("NATS at %s refused the credentials: %s (check --user/--password, --creds or --nkey)", url, msg)
	}
	if strings.Contains(msg, "tls") || strings.Contains(msg, "x509") || strings.Contains(msg, "certificate") {
		return configErr("TLS with NATS at %s failed: %s (check --tlsca, --tlscert and --tlskey)", url, msg)
	}
	return unavailableErr("cannot connect to NATS at %s: %s (is the server running and reachable? check --nats)", url, msg)
}

// authError tells whether err is NATS refusing the credentials.
func authError(err error) bool {
	return err != nil && (errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || strings.Contains(strings.ToLower(err.Error()), "authorization"))
}
