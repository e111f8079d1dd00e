package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/slotbroker/slotbroker/client"
)

// TestExitStatusOfPermissionAndWaiterErrors: a permission denied (by the
// NATS server or the broker) exits 77, too many waiters 75.
func TestExitStatusOfPermissionAndWaiterErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: the NATS user lacks publish permission on %q", client.ErrPermissionDenied, "x"), exitNoPerm},
		{fmt.Errorf("run: %w", client.ErrPermissionDenied), 77},
		{fmt.Errorf("%w: the inbox has 100 waiters", client.ErrTooManyWaiters), exitTempFail},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exit status for %v: %d, want %d", c.err, got, c.want)
		}
	}
}

// TestInvalidFlagValuesExitUsage: a flag value that is invalid exits 64,
// whether slotctl finds it so or the broker does (a --lease-ttl outside its
// bounds); 65 stays for what the limits' state refuses.
func TestInvalidFlagValuesExitUsage(t *testing.T) {
	e := embeddedBroker(t)
	if _, err := e.Client.CreateLimit(testContext(t), "db", 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"run", "db", "--lease-ttl", "100ms", "--", "true"}, "ttl"},
		{[]string{"run", "db", "--lease-ttl", "500us", "--", "true"}, "ttl"},
		{[]string{"run", "db", "--lease-ttl", "-1s", "--", "true"}, "--lease-ttl"},
		{[]string{"run", "db", "--timeout", "-1s", "--", "true"}, "--timeout"},
		{[]string{"run", "db", "--occupy", "0", "--", "true"}, "--occupy"},
		{[]string{"run", "db", "--holder", "a\x01b", "--", "true"}, "holder"},
		{[]string{"rate", "db", "--timeout", "-1s"}, "--timeout"},
		{[]string{"rate", "db", "--occupy", "-3"}, "--occupy"},
		{[]string{"--request-timeout", "0", "ls"}, "--request-timeout"},
		{[]string{"update", "db", "--slot-decay-per-second", "-1"}, "--slot-decay-per-second"},
		{[]string{"create", "y", "--limit", "0"}, "--limit"},
	} {
		what := "slotctl " + strings.Join(c.args, " ")
		code, _, stderr := at(e, c.args...)
		if line := oneLine(t, what, stderr); code != exitUsage || !strings.Contains(line, c.flag) {
			t.Errorf("%s: exit %d, stderr %q; want 64 naming %s", what, code, stderr, c.flag)
		}
	}
	if code, _, stderr := at(e, "run", "db", "--occupy", "2", "--", "true"); code != exitDataErr {
		t.Errorf("run --occupy above the limit: exit %d, stderr %q; want 65", code, stderr)
	}
}

// TestExitStatusesAreDocumented: slotctl --help and README.md list the same
// causes for each exit status, among them an inactive limit under --strict
// (65), --try finding no free slot (75), invalid flag values (64) and a
// declined delete (0); both name SLOTCTL_STRICT and the completion command.
func TestExitStatusesAreDocumented(t *testing.T) {
	_, help, _ := slotctl("--help")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"inactive under --strict", "no slot free with --try", "invalid flag value", "delete declined at its prompt",
		"SLOTCTL_STRICT=1", "completion"} {
		if !strings.Contains(strings.Join(strings.Fields(help), " "), want) {
			t.Errorf("slotctl --help lacks %q:\n%s", want, help)
		}
		if !strings.Contains(strings.Join(strings.Fields(strings.ReplaceAll(string(readme), "`", "")), " "), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
}
