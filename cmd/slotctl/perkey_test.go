package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// TestCreatePerKeyAndLsShowsItsLiveKeys: create --per-key makes a per-key
// limit (and says so); ls marks it, with its live keys counted, and marks a
// plain limit "-".
func TestCreatePerKeyAndLsShowsItsLiveKeys(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	code, stdout, stderr := at(e, "create", "tenant", "--limit", "2", "--per-key")
	if code != exitOK || !strings.Contains(stdout, `created limit "tenant": 2 slots, active, per key`) {
		t.Fatalf("create --per-key: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if info, err := e.Client.GetLimit(ctx, "tenant"); err != nil || !info.PerKey {
		t.Fatalf("tenant after create --per-key: %+v, %v; want per-key", info, err)
	}
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"acme", "globex"} {
		if _, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey(key)); err != nil {
			t.Fatalf("acquire key %s: %v", key, err)
		}
	}
	code, stdout, stderr = at(e, "ls")
	if code != exitOK {
		t.Fatalf("ls: exit %d, stderr %q", code, stderr)
	}
	var tenant, db string
	for _, l := range strings.Split(stdout, "\n") {
		switch {
		case strings.Contains(l, "tenant"):
			tenant = l
		case strings.Contains(l, " db "):
			db = l
		}
	}
	if !strings.Contains(stdout, "KEYS") || !strings.Contains(tenant, "per-key (2 live)") || !strings.HasSuffix(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(db), "│")), "-") {
		t.Errorf("ls does not mark the per-key limit with its 2 live keys, or the plain one with -:\n%s", stdout)
	}
}

// TestInspectShowsTheLiveKeysOfAPerKeyLimit: inspect of a per-key limit
// says it is per-key and lists its live keys with their slots, holders
// and waiters, instead of holders and waiters of its own (it has none).
func TestInspectShowsTheLiveKeysOfAPerKeyLimit(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := at(e, "inspect", "tenant")
	if code != exitOK || !strings.Contains(stdout, "0 live keys") {
		t.Errorf("inspect of a per-key limit without keys: exit %d:\n%s", code, stdout)
	}
	if _, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme")); err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	go func() {
		_, _ = e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme"), client.WithQueued(func(client.Queued) { close(queued) }))
	}()
	<-queued
	code, stdout, stderr := at(e, "inspect", "tenant")
	if code != exitOK {
		t.Fatalf("inspect: exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"Per key:", "1 slot of its own", "1 live key", "KEY", "ACTIVE SLOTS", "acme"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect of a per-key limit lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "Holders (") {
		t.Errorf("inspect of a per-key limit lists holders of its own (it has none: its keys have):\n%s", stdout)
	}
	// The table row of acme: 1 active slot, 1 holder, 1 waiter.
	var row string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.Contains(l, "acme") {
			row = strings.Join(strings.FieldsFunc(l, func(r rune) bool { return r == '│' || r == '|' || r == ' ' }), " ")
		}
	}
	if row != "acme 1 1 1" {
		t.Errorf("acme's row is %q, want key, active slots, holders, waiters \"acme 1 1 1\":\n%s", row, stdout)
	}
}

// TestPrintKeysSaysHowManyItShows: a family with more live keys than the
// broker listed says how many it shows.
func TestPrintKeysSaysHowManyItShows(t *testing.T) {
	info := &client.LimitInfo{Limit: messages.Limit{Name: "tenant", Limit: 2, Active: true, PerKey: true},
		Keys: []messages.KeyInfo{{Key: "a", ActiveSlots: 1, HoldersTotal: 1}}, KeysTotal: 3}
	var out bytes.Buffer
	if err := printInspect(&out, info, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "3 live keys (showing 1)") {
		t.Errorf("inspect of 3 keys, 1 listed:\n%s", out.String())
	}
}

// TestInspectKeyShowsThatKeysHoldersAndWaiters: inspect --key shows one
// key: its name, key, holders and waiters; an idle key shows none.
func TestInspectKeyShowsThatKeysHoldersAndWaiters(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 2, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	lease, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme"), client.WithHolder("acme's job"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := at(e, "inspect", "tenant", "--key", "acme")
	if code != exitOK {
		t.Fatalf("inspect --key acme: exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"Key:", "acme", "acme's job", lease.ID(), "Holders (1):", "Waiters (0):"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect --key acme lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = at(e, "inspect", "tenant", "--key", "globex")
	if code != exitOK || !strings.Contains(stdout, "Holders (0):") || !strings.Contains(stdout, "globex") {
		t.Errorf("inspect --key of an idle key: exit %d, stderr %q:\n%s", code, stderr, stdout)
	}
	if code, stdout, stderr := at(e, "inspect", "tenant", "--key", "acme", "--json"); code != exitOK ||
		!strings.Contains(stdout, `"key": "acme"`) || !strings.Contains(stdout, `"name": "tenant"`) {
		t.Errorf("inspect --key --json: exit %d, stderr %q:\n%s", code, stderr, stdout)
	}
}

// TestRunAndRateTakeAKey: run --key and rate --key take slots of that key
// only (another key still has room); a key with several names, a priority
// out of 0..9 are usage errors; a per-key limit without --key, or --key on
// a plain limit, is refused by the broker as a usage error too.
func TestRunAndRateTakeAKey(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.CreateLimit(ctx, "api", 2, client.PerKey(), client.WithSlotDecay(0.001)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want int
		say  string
	}{
		{[]string{"run", "tenant", "--key", "acme", "--try", "--", "true"}, exitTempFail, "at once"},
		{[]string{"run", "tenant", "--key", "globex", "--try", "--", "true"}, exitOK, ""},
		{[]string{"run", "tenant", "--key", "globex", "--priority", "9", "--", "true"}, exitOK, ""},
		{[]string{"run", "tenant", "--", "true"}, exitDataErr, "per-key"},
		{[]string{"run", "db", "--key", "acme", "--", "true"}, exitDataErr, "not per-key"},
		{[]string{"run", "tenant,db", "--key", "acme", "--", "true"}, exitUsage, "give one limit name"},
		{[]string{"run", "tenant", "--key", "a.b", "--", "true"}, exitDataErr, "key"},
		{[]string{"run", "db", "--priority", "10", "--", "true"}, exitUsage, "--priority must be 0"},
		{[]string{"run", "db", "--priority", "-1", "--", "true"}, exitUsage, "--priority must be 0"},
		{[]string{"rate", "api", "--key", "acme", "--occupy", "2"}, exitOK, ""},
		{[]string{"rate", "api", "--key", "acme", "--try"}, exitTempFail, "at once"},
		{[]string{"rate", "api", "--key", "globex", "--try", "--occupy", "2"}, exitOK, ""},
		{[]string{"rate", "api", "--try"}, exitDataErr, "per-key"},
		{[]string{"rate", "api", "--key", "acme", "--priority", "12"}, exitUsage, "--priority must be 0"},
	} {
		code, _, stderr := at(e, c.args...)
		if code != c.want || !strings.Contains(stderr, c.say) {
			t.Errorf("slotctl %s: exit %d, stderr %q; want %d and %q", strings.Join(c.args, " "), code, stderr, c.want, c.say)
		}
	}
}

// TestRevokeKeyEndsALeaseOfThatKey: revoke --key revokes a lease of one key
// of a per-key limit.
func TestRevokeKeyEndsALeaseOfThatKey(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	lease, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := at(e, "revoke", "tenant", lease.ID(), "--key", "globex"); code != exitNoPerm {
		t.Errorf("revoke through another key: exit %d, stderr %q; want 77", code, stderr)
	}
	code, stdout, stderr := at(e, "revoke", "tenant", lease.ID(), "--key", "acme", "--reason", "stuck")
	if code != exitOK || !strings.Contains(stdout, "revoked lease "+lease.ID()) {
		t.Fatalf("revoke --key acme: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	select {
	case <-lease.Done():
	case <-ctx.Done():
		t.Fatal("the revoked lease's Done did not close")
	}
	if err := lease.Err(); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Errorf("revoked lease's Err: %v; want ErrLeaseRevoked", err)
	}
}

// TestUnenforcedKeyWarningSuggestsACommandThatWorks: run and rate on a key
// of a family that is missing or inactive go on unlimited and say how to
// have it enforced. The command they suggest must be one that works: the
// family is created (per-key) or enabled, not "<name>.<key>", which no
// verb but acquire, get and revoke takes.
func TestUnenforcedKeyWarningSuggestsACommandThatWorks(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "paused", 1, client.PerKey(), client.WithInactive()); err != nil {
		t.Fatal(err)
	}
	suggested := regexp.MustCompile(`\((slotctl [^)]*)\)`)
	for _, args := range [][]string{
		{"run", "tenant", "--key", "acme", "--", "true"},
		{"rate", "tenant-api", "--key", "acme"},
		{"run", "paused", "--key", "acme", "--", "true"},
	} {
		code, _, stderr := at(e, args...)
		m := suggested.FindStringSubmatch(stderr)
		if code != exitOK || m == nil {
			t.Fatalf("slotctl %s: exit %d, stderr %q; want 0 and a warning suggesting a command", strings.Join(args, " "), code, stderr)
		}
		fix := strings.Fields(strings.ReplaceAll(m[1], "--limit N", "--limit 1"))[1:]
		if code, _, out := at(e, fix...); code != exitOK {
			t.Errorf("slotctl %s warns %q; the command it suggests, slotctl %s, fails: exit %d, %q",
				strings.Join(args, " "), strings.TrimSpace(stderr), strings.Join(fix, " "), code, strings.TrimSpace(out))
			continue
		}
		// Done as suggested, the key is enforced (a rate limit also needs
		// --slot-decay-per-second, which the suggestion leaves out for plain
		// limits too).
		if code, _, stderr := at(e, args...); args[0] == "run" && (code != exitOK || stderr != "") {
			t.Errorf("after slotctl %s, slotctl %s: exit %d, stderr %q; want the key enforced", strings.Join(fix, " "), strings.Join(args, " "), code, stderr)
		}
	}
}

// TestKeyOnAPlainLimitExitsAlikeInEveryVerb: --key on a limit that is not
// per-key is refused by the limit's state (a per-key limit would take the
// same key), which exitcode.go makes a data error (65); whatever the verb,
// the same mistake must give the same exit status.
func TestKeyOnAPlainLimitExitsAlikeInEveryVerb(t *testing.T) {
	e := embeddedBroker(t)
	ctx := testContext(t)
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.CreateLimit(ctx, "api", 1, client.WithSlotDecay(1)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"inspect", "db", "--key", "acme"},
		{"run", "db", "--key", "acme", "--", "true"},
		{"run", "db", "--key", "acme", "--try", "--", "true"},
		{"rate", "api", "--key", "acme"},
	} {
		if code, _, stderr := at(e, args...); code != exitDataErr || !strings.Contains(stderr, "not per-key") {
			t.Errorf("slotctl %s: exit %d, stderr %q; want 65 (as inspect) and \"not per-key\"", strings.Join(args, " "), code, stderr)
		}
	}
}
