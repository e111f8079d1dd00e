package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// userServer starts an in-process nats-server (no broker) with the users
// "admin" (may do anything), "app" (may publish only
// "slotbroker.v1.acquire.db", subscribe to "_INBOX.>") and "boxed" (may
// publish under "slotbroker.", subscribe only to "_INBOX.boxed.>").
func userServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Users: []*server.User{
		{Username: "admin", Password: "admin"},
		{Username: "app", Password: "app", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.v1.acquire.db"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
		{Username: "boxed", Password: "boxed", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.boxed.>"}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	return s
}

// slotctl runs slotctl with args and returns its exit status, stdout and stderr.
func slotctl(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := execute(args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestDeniedRequestExitsNoPerm: a command whose request the NATS user may
// not publish exits 77 at once with a message naming the subject.
func TestDeniedRequestExitsNoPerm(t *testing.T) {
	s := userServer(t)
	for _, c := range []struct {
		args    []string
		subject string
	}{
		{[]string{"inspect", "other"}, "slotbroker.v1.get.other"},
		{[]string{"ls"}, "slotbroker.v1.list"},
		{[]string{"rate", "db,other", "--timeout", "20s"}, "slotbroker.v1.acquire-many.db.other"},
	} {
		args := append([]string{"--server", s.ClientURL(), "--user", "app", "--password", "app", "--request-timeout", "20s"}, c.args...)
		code, _, stderr := slotctl(args...)
		if code != exitNoPerm || !strings.Contains(stderr, `"`+c.subject+`"`) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("slotctl %s as a user who may not publish to %s: exit %d, stderr %q; want 77 and one line naming the subject",
				strings.Join(c.args, " "), c.subject, code, stderr)
		}
	}
}

// TestInboxPrefixFlag: --inbox-prefix sets the connection's inbox prefix,
// so a user who may subscribe only to its own inboxes gets its answers;
// without it, slotctl exits 77 saying to give it.
func TestInboxPrefixFlag(t *testing.T) {
	s := userServer(t)
	admin, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	sub, err := admin.Subscribe("slotbroker.v1.list", func(m *nats.Msg) {
		data, _ := messages.Marshal(messages.JSON, messages.ListReply{Limits: []messages.LimitInfo{{Limit: messages.Limit{Name: "listed", Limit: 1}}}})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	base := []string{"--server", s.ClientURL(), "--user", "boxed", "--password", "boxed"}

	code, _, stderr := slotctl(append(base, "ls")...)
	if code != exitNoPerm || !strings.Contains(stderr, "--inbox-prefix") || !strings.Contains(stderr, "_INBOX.") {
		t.Errorf("slotctl ls without --inbox-prefix: exit %d, stderr %q; want 77 saying to give --inbox-prefix", code, stderr)
	}
	code, stdout, stderr := slotctl(append(base, "--inbox-prefix", "_INBOX.boxed", "ls")...)
	if code != exitOK || !strings.Contains(stdout, "listed") {
		t.Errorf("slotctl --inbox-prefix _INBOX.boxed ls: exit %d, stdout %q, stderr %q; want the stand-in's limit", code, stdout, stderr)
	}
	for _, bad := range []string{"_INBOX.", "_INBOX.*", "a..b", "has space"} {
		if code, _, stderr := slotctl(append(base, "--inbox-prefix", bad, "ls")...); code != exitUsage {
			t.Errorf("slotctl --inbox-prefix %q: exit %d, stderr %q; want 64", bad, code, stderr)
		}
	}
}
