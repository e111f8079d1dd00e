package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestRunWithoutDashDashSaysToPutIt: a command whose flags slotctl takes for
// its own (no "--" before it) fails with a hint to put "--" before it; a
// misspelled flag of run's own before "--" gets no such hint.
func TestRunWithoutDashDashSaysToPutIt(t *testing.T) {
	for _, c := range []struct {
		args []string
		hint string
	}{
		{[]string{"run", "db", "sh", "-c", "echo a b"}, "slotctl run db -- sh -c"},
		{[]string{"run", "db,other", "ls", "-l", "/tmp"}, "slotctl run db,other -- ls -l"},
		{[]string{"run", "--occupy", "2", "db", "grep", "--count", "x"}, "slotctl run db -- grep --count"},
	} {
		what := "slotctl " + strings.Join(c.args, " ")
		code, _, stderr := slotctl(c.args...)
		line := oneLine(t, what, stderr)
		if code != exitUsage || !strings.Contains(line, "put -- before the command") || !strings.Contains(line, c.hint) {
			t.Errorf("%s: exit %d, stderr %q; want 64 and a hint %q", what, code, stderr, c.hint)
		}
	}
	code, _, stderr := slotctl("run", "db", "--ocupy", "2", "--", "true")
	if line := oneLine(t, "run --ocupy", stderr); code != exitUsage || !strings.Contains(line, "unknown flag: --ocupy") || strings.Contains(line, "put --") {
		t.Errorf("slotctl run db --ocupy 2 -- true: exit %d, stderr %q; want the unknown flag, without the -- hint", code, stderr)
	}
}

// TestDefaultHolderQuotesArguments: run's default holder text shows the
// command as a shell would need it typed: arguments with spaces or quotes
// are quoted, control characters escaped, and the text is one the broker
// accepts (printable, at most 256 bytes).
func TestDefaultHolderQuotesArguments(t *testing.T) {
	for _, c := range []struct {
		command []string
		want    string
	}{
		{[]string{"sh", "-c", "echo a b"}, `slotctl run sh -c 'echo a b' on `},
		{[]string{"echo", "it's"}, `slotctl run echo 'it'\''s' on `},
		{[]string{"printf", "a\nb"}, `slotctl run printf $'a\nb' on `},
		{[]string{"true", ""}, `slotctl run true '' on `},
		{[]string{"/usr/bin/env", "A=1", "make", "-j4", "all"}, `slotctl run /usr/bin/env A=1 make -j4 all on `},
	} {
		got := defaultHolder(c.command)
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("defaultHolder(%q) = %q, want it to start with %q", c.command, got, c.want)
		}
		if e := messages.CheckHolder(got); e != nil {
			t.Errorf("defaultHolder(%q) = %q, which the broker refuses: %v", c.command, got, e)
		}
	}
	long := defaultHolder([]string{"sh", "-c", strings.Repeat("é\x01", 200)})
	if e := messages.CheckHolder(long); e != nil || !strings.Contains(long, "…") {
		t.Errorf("defaultHolder of a long command = %q (%v): want it cut with … and accepted", long, e)
	}
}

// TestRunTryExitsTempFailWhenNoSlotIsFree: run --try never waits: with no
// free slot it exits 75 at once without running the command and leaves no
// waiter; with a free one it runs the command.
func TestRunTryExitsTempFailWhenNoSlotIsFree(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	lease, err := e.Client.Acquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	start := time.Now()
	code, _, stderr := at(e, "run", "db", "--try", "--", "touch", marker)
	if line := oneLine(t, "run --try", stderr); code != exitTempFail || !strings.Contains(line, "--try") || time.Since(start) > 3*time.Second {
		t.Errorf("run --try on a full limit: exit %d after %v, stderr %q; want 75 at once, naming --try", code, time.Since(start), stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("run --try ran the command without a slot")
	}
	if info, err := e.Client.GetLimit(ctx, "db"); err != nil || len(info.Waiters) != 0 {
		t.Errorf("after run --try: %+v, %v; want no waiter", info, err)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := at(e, "run", "db", "--try", "--", "touch", marker); code != exitOK {
		t.Errorf("run --try on a free limit: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("run --try on a free limit did not run the command")
	}
	if code, _, stderr := at(e, "run", "db", "--try", "--timeout", "1s", "--", "true"); code != exitUsage {
		t.Errorf("run --try --timeout: exit %d, stderr %q; want 64", code, stderr)
	}
}

// TestRunOnMissingLimitWarnsHowToBeStrict: a run on a missing or inactive
// limit runs unlimited after a warning that says how to make it fail
// instead: --strict or SLOTCTL_STRICT=1.
func TestRunOnMissingLimitWarnsHowToBeStrict(t *testing.T) {
	t.Setenv("SLOTCTL_STRICT", "")
	e := embeddedBroker(t)
	if _, err := e.Client.CreateLimit(testContext(t), "off", 1, client.WithInactive()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dbb", "off"} {
		code, _, stderr := at(e, "run", name, "--", "true")
		line := oneLine(t, "run "+name, stderr)
		if code != exitOK || !strings.Contains(line, "warning") || !strings.Contains(line, name) ||
			!strings.Contains(line, "--strict") || !strings.Contains(line, "SLOTCTL_STRICT=1") {
			t.Errorf("run %s -- true: exit %d, stderr %q; want 0 and a warning naming %s, --strict and SLOTCTL_STRICT=1", name, code, stderr, name)
		}
	}
}

// TestStrictEnvironmentVariable: SLOTCTL_STRICT=1 makes run and rate strict
// (a missing limit exits 65 and nothing runs), --strict=false overrides it,
// SLOTCTL_STRICT=0 is not strict, and another value is a usage error; run's
// and rate's --help document it.
func TestStrictEnvironmentVariable(t *testing.T) {
	e := embeddedBroker(t)
	marker := filepath.Join(t.TempDir(), "ran")
	t.Setenv("SLOTCTL_STRICT", "1")
	if code, _, stderr := at(e, "run", "dbb", "--", "touch", marker); code != exitDataErr || !strings.Contains(stderr, "dbb") {
		t.Errorf("SLOTCTL_STRICT=1 run on a missing limit: exit %d, stderr %q; want 65", code, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("SLOTCTL_STRICT=1 run on a missing limit ran the command")
	}
	if code, _, stderr := at(e, "rate", "dbb"); code != exitDataErr {
		t.Errorf("SLOTCTL_STRICT=1 rate on a missing limit: exit %d, stderr %q; want 65", code, stderr)
	}
	if code, _, stderr := at(e, "run", "dbb", "--strict=false", "--", "true"); code != exitOK {
		t.Errorf("SLOTCTL_STRICT=1 run --strict=false: exit %d, stderr %q; want 0", code, stderr)
	}
	t.Setenv("SLOTCTL_STRICT", "0")
	if code, _, stderr := at(e, "rate", "dbb"); code != exitOK || !strings.Contains(stderr, "warning") {
		t.Errorf("SLOTCTL_STRICT=0 rate on a missing limit: exit %d, stderr %q; want 0 and a warning", code, stderr)
	}
	t.Setenv("SLOTCTL_STRICT", "maybe")
	if code, _, stderr := at(e, "run", "dbb", "--", "true"); code != exitUsage || !strings.Contains(stderr, "SLOTCTL_STRICT") {
		t.Errorf("SLOTCTL_STRICT=maybe run: exit %d, stderr %q; want 64 naming SLOTCTL_STRICT", code, stderr)
	}
	for _, verb := range []string{"run", "rate"} {
		if _, stdout, _ := slotctl(verb, "--help"); !strings.Contains(stdout, "SLOTCTL_STRICT") {
			t.Errorf("slotctl %s --help does not document SLOTCTL_STRICT:\n%s", verb, stdout)
		}
	}
	if _, err := e.Client.GetLimit(testContext(t), "dbb"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("get dbb: %v, want not found", err)
	}
}
