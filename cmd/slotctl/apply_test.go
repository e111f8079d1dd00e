package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// applyBroker starts NATS with JetStream and a broker in-process for one
// test, with the limits of seed (name -> config) created; Stop runs at the
// test's end.
func applyBroker(t *testing.T, seed map[string]limitConfig) *brokertest.Embedded {
	t.Helper()
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(e.Stop)
	for name, cfg := range seed {
		opts := []client.LimitOption{client.WithSlotDecay(cfg.SlotDecayPerSecond)}
		if !cfg.Active {
			opts = append(opts, client.WithInactive())
		}
		if cfg.PerKey {
			opts = append(opts, client.PerKey())
		}
		if _, err := e.Client.CreateLimit(applyContext(t), name, cfg.Limit, opts...); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	return e
}

// applyContext is a context that ends with the test, or after 20 s.
func applyContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// slotctlOn runs slotctl with args against e's server, stdin as its
// standard input, and returns its exit status, stdout and stderr.
func slotctlOn(e *brokertest.Embedded, stdin string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := execute(append([]string{"-s", e.URL}, args...), strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// writeFile writes content to name in a temporary directory and returns its path.
func writeLimitsFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// brokerLimits is every limit of e's broker, with the times of its last
// change: a change apply should not have made shows.
func brokerSnapshot(t *testing.T, e *brokertest.Embedded) map[string]string {
	t.Helper()
	limits, err := e.Client.ListLimits(applyContext(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range limits {
		c := configOf(&l)
		out[l.Name] = configString(c) + " updated " + l.UpdatedAt.Format(time.RFC3339Nano)
	}
	return out
}

// configs is every limit of e's broker and its configuration.
func brokerConfigs(t *testing.T, e *brokertest.Embedded) map[string]limitConfig {
	t.Helper()
	limits, err := e.Client.ListLimits(applyContext(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]limitConfig{}
	for _, l := range limits {
		out[l.Name] = configOf(&l)
	}
	return out
}

// formatConfig renders c for test messages.
func configString(c limitConfig) string {
	return "limit " + formatFloat(float64(c.Limit)) + " decay " + formatFloat(c.SlotDecayPerSecond) + " active " + yesNo(c.Active)
}

// lines splits output into its lines.
func outputLines(out string) []string {
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

const limitsYAML = `# the limits of the service
limits:
  - name: db
    limit: 3
  - name: api
    limit: 100
    slot_decay_per_second: 10
  - name: batch
    limit: 2
    active: false
`

// TestApplyCreatesTheLimitsTheBrokerLacks: apply creates each limit of the
// file the broker does not have, with its slot decay and activity (absent
// fields: no decay, active), one line per limit and a summary.
func TestApplyCreatesTheLimitsTheBrokerLacks(t *testing.T) {
	e := applyBroker(t, nil)
	path := writeLimitsFile(t, "limits.yaml", limitsYAML)
	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path)
	want := []string{
		"created db (limit 3)",
		"created api (limit 100, slot decay 10/s)",
		"created batch (limit 2, inactive)",
		"applied " + path + ": 3 created",
	}
	if code != exitOK || !reflect.DeepEqual(outputLines(stdout), want) || stderr != "" {
		t.Fatalf("apply: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	wantCfg := map[string]limitConfig{"db": {3, 0, true, false}, "api": {100, 10, true, false}, "batch": {2, 0, false, false}}
	if got := brokerConfigs(t, e); !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("broker's limits after apply: %v, want %v", got, wantCfg)
	}
}

// TestApplyUpdatesOnlyTheFieldsThatDiffer: a limit the broker has with
// other settings is updated, each changed field shown "old -> new"; a
// field absent from the file goes back to its default.
func TestApplyUpdatesOnlyTheFieldsThatDiffer(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {5, 0, true, false}, "api": {100, 2, false, false}, "batch": {2, 0, false, false}})
	code, stdout, stderr := slotctlOn(e, limitsYAML, "apply", "-f", "-")
	want := []string{
		"updated db: limit 5 -> 3",
		"updated api: slot_decay_per_second 2 -> 10, active false -> true",
		"applied <stdin>: 2 updated, 1 unchanged",
	}
	if code != exitOK || !reflect.DeepEqual(outputLines(stdout), want) || stderr != "" {
		t.Fatalf("apply -f -: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	wantCfg := map[string]limitConfig{"db": {3, 0, true, false}, "api": {100, 10, true, false}, "batch": {2, 0, false, false}}
	if got := brokerConfigs(t, e); !reflect.DeepEqual(got, wantCfg) {
		t.Errorf("broker's limits after apply: %v, want %v", got, wantCfg)
	}

	// Without slot_decay_per_second and active, a rate limit that was
	// disabled becomes a concurrency limit that is enforced.
	code, stdout, _ = slotctlOn(e, "- {name: api, limit: 100}\n- {name: batch, limit: 2}\n", "apply", "-f", "-")
	if code != exitOK || !strings.Contains(stdout, "updated api: slot_decay_per_second 10 -> 0\n") ||
		!strings.Contains(stdout, "updated batch: active false -> true\n") {
		t.Errorf("apply of limits without the optional fields: exit %d, stdout %q; want them back at their defaults", code, stdout)
	}
}

// TestApplyDeletesLimitsNotInTheFileOnlyWithPrune: without --prune a limit
// missing from the file is kept and the summary says so (-v names it);
// with --prune it is deleted, its holders and waiters counted.
func TestApplyDeletesLimitsNotInTheFileOnlyWithPrune(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {3, 0, true, false}, "old": {1, 0, true, false}})
	if _, err := e.Client.Acquire(applyContext(t), "old", 1); err != nil {
		t.Fatal(err)
	}
	path := writeLimitsFile(t, "limits.yaml", "- name: db\n  limit: 3\n")

	code, stdout, _ := slotctlOn(e, "", "apply", "-f", path, "-v")
	want := []string{"unchanged db", "kept old: not in the file (--prune deletes it)",
		"no changes: the broker has the 1 limit of " + path + " as given; 1 limit not in the file, kept (--prune deletes it)"}
	if code != exitOK || !reflect.DeepEqual(outputLines(stdout), want) {
		t.Errorf("apply -v without --prune: exit %d, stdout %q; want %q", code, stdout, want)
	}
	if _, ok := brokerConfigs(t, e)["old"]; !ok {
		t.Fatal("apply without --prune deleted old")
	}

	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune")
	want = []string{"deleted old (it had 1 holder)", "applied " + path + ": 1 deleted, 1 unchanged"}
	if code != exitOK || !reflect.DeepEqual(outputLines(stdout), want) {
		t.Errorf("apply --prune: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, want)
	}
	if got := brokerConfigs(t, e); len(got) != 1 || got["db"] != (limitConfig{3, 0, true, false}) {
		t.Errorf("broker's limits after apply --prune: %v, want db alone", got)
	}
}

// TestApplyDryRunChangesNothing: --dry-run prints what apply would create,
// update and delete, and the broker is left exactly as it was.
func TestApplyDryRunChangesNothing(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {5, 0, true, false}, "old": {1, 0, true, false}, "batch": {2, 0, false, false}})
	before := brokerSnapshot(t, e)
	path := writeLimitsFile(t, "limits.yaml", limitsYAML)
	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune", "--dry-run")
	want := []string{
		"would update db: limit 5 -> 3",
		"would create api (limit 100, slot decay 10/s)",
		"would delete old",
		"dry run of " + path + ": 1 to create, 1 to update, 1 to delete, 1 unchanged; nothing was changed",
	}
	if code != exitOK || !reflect.DeepEqual(outputLines(stdout), want) || stderr != "" {
		t.Errorf("apply --dry-run: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	if after := brokerSnapshot(t, e); !reflect.DeepEqual(after, before) {
		t.Errorf("apply --dry-run changed the broker's limits: before %v, after %v", before, after)
	}
}

// TestApplyIsIdempotent: a second apply of the same file changes nothing,
// says "no changes" and exits 0, like the first.
func TestApplyIsIdempotent(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"old": {1, 0, true, false}})
	path := writeLimitsFile(t, "limits.yaml", limitsYAML)
	if code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune"); code != exitOK {
		t.Fatalf("first apply: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	before := brokerSnapshot(t, e)
	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune")
	if want := "no changes: the broker has the 3 limits of " + path + " as given\n"; code != exitOK || stdout != want || stderr != "" {
		t.Errorf("second apply: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	if after := brokerSnapshot(t, e); !reflect.DeepEqual(after, before) {
		t.Errorf("second apply changed the broker's limits: before %v, after %v", before, after)
	}
}

// TestApplyRoundTripsLsJSON: the output of ls --json (with live state:
// holders, active slots, times; a slot decay encoding/json writes as
// 1e-07), as JSON or converted to YAML, applies to its own broker as no
// change, and to an empty broker as the same limits.
func TestApplyRoundTripsLsJSON(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {3, 0, true, false}, "api": {100, 2.5, true, false}, "batch": {2, 0, false, false}, "slow": {1, 1e-7, true, false}})
	if _, err := e.Client.Acquire(applyContext(t), "db", 2, client.WithHolder("worker 1")); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.RateLimit(applyContext(t), "api", 7); err != nil {
		t.Fatal(err)
	}
	code, lsJSON, stderr := slotctlOn(e, "", "ls", "--json")
	if code != exitOK || !strings.Contains(lsJSON, `"holders": [`) || !strings.Contains(lsJSON, `"active_slots": 7`) ||
		!strings.Contains(lsJSON, `"slot_decay_per_second": 1e-7`) {
		t.Fatalf("ls --json: exit %d, stderr %q, stdout %s; want the live state in it", code, stderr, lsJSON)
	}
	asYAML, err := yaml.JSONToYAML([]byte(lsJSON))
	if err != nil {
		t.Fatal(err)
	}
	before := brokerSnapshot(t, e)
	for what, input := range map[string]string{"ls --json": lsJSON, "ls --json as YAML": string(asYAML)} {
		code, stdout, stderr := slotctlOn(e, input, "apply", "-f", "-", "--prune")
		if code != exitOK || stdout != "no changes: the broker has the 4 limits of <stdin> as given\n" || stderr != "" {
			t.Errorf("apply --prune of %s: exit %d, stdout %q, stderr %q; want no changes", what, code, stdout, stderr)
		}
	}
	if after := brokerSnapshot(t, e); !reflect.DeepEqual(after, before) {
		t.Errorf("applying ls --json changed the broker's limits: before %v, after %v", before, after)
	}

	other := applyBroker(t, nil)
	if code, stdout, stderr := slotctlOn(other, string(asYAML), "apply", "-f", "-"); code != exitOK || !strings.Contains(stdout, "4 created") {
		t.Fatalf("apply of ls --json to another broker: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got, want := brokerConfigs(t, other), brokerConfigs(t, e); !reflect.DeepEqual(got, want) {
		t.Errorf("limits copied through ls --json and apply: %v, want %v", got, want)
	}
}

// TestApplyRefusesABadFileNamingLineAndField: a file with a problem
// anywhere exits 65 with one line naming the file, the line and column, the
// limit and the field, and the broker is left as it was, even when the
// limits before the problem are good.
func TestApplyRefusesABadFileNamingLineAndField(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {5, 0, true, false}})
	before := brokerSnapshot(t, e)
	for _, c := range []struct {
		what, file string
		want       []string
	}{
		{"an unknown field", "- name: new\n  limit: 1\n- name: db\n  limit: 3\n  limt: 4\n",
			[]string{":5:3: ", `limit "db": unknown field "limt"`, "name, limit, slot_decay_per_second, active"}},
		{"a negative limit", "- name: new\n  limit: 1\n- name: db\n  limit: -3\n",
			[]string{":4:10: ", `limit "db": field limit: -3 is negative`}},
		{"a limit of 0 (as create refuses it)", "- name: new\n  limit: 1\n- name: db\n  limit: 0\n",
			[]string{":4:10: ", `limit "db": field limit: 0 slots could never be granted`, "active: false"}},
		{"a missing name", "- name: new\n  limit: 1\n- limit: 3\n",
			[]string{":3:3: ", "limit #2 has no name"}},
		{"a duplicate name", "- name: db\n  limit: 1\n- name: new\n  limit: 1\n- name: db\n  limit: 2\n",
			[]string{":5:9: ", `limit "db": field name: "db" is in the file twice (first at line 1)`}},
		{"a bad name", "- name: new\n  limit: 1\n- name: db.eu\n  limit: 1\n",
			[]string{":3:9: ", "limit #2: field name: ", `"db.eu" has the character '.'`}},
		{"a missing limit", "- name: new\n",
			[]string{":1:3: ", `limit "new" has no limit`}},
		{"a limit in quotes", "- {name: new, limit: \"3\"}\n",
			[]string{":1:22: ", `field limit: the string "3" is not a number`}},
		{"a fractional limit", "- {name: new, limit: 2.5}\n",
			[]string{":1:22: ", "field limit: 2.5 is not a whole number"}},
		{"a bad active", "- {name: new, limit: 2, active: yes}\n",
			[]string{":1:33: ", `field active: the string "yes" is not true or false`}},
		{"a negative slot decay", "- name: new\n  limit: 2\n  slot_decay_per_second: -1\n",
			[]string{":3:26: ", "field slot_decay_per_second: -1 is negative"}},
		{"a slot decay too slow to drain", "- {name: new, limit: 1000, slot_decay_per_second: 1e-9}\n",
			[]string{":1:51: ", "field slot_decay_per_second: 1e-09 is too slow for a limit of 1000"}},
		{"a key twice", "- name: new\n  limit: 1\n  limit: 2\n",
			[]string{":3:3: ", `mapping key "limit" already defined`}},
		{"broken YAML", "- name: new\n  limit: [1\n",
			[]string{":2:10: ", "not valid YAML"}},
		{"a limit that is not a mapping", "- new\n",
			[]string{":1:3: ", `limit #1 is the string "new"`}},
		{"an unknown top-level field", "limits: []\nprune: true\n",
			[]string{":2:1: ", `unknown top-level field "prune"`}},
		{"an empty file", "# no limits yet\n",
			[]string{"no limits in the file", "[] for none"}},
		{"an alias without anchor", "- {name: new, limit: *n}\n",
			[]string{":1:22: ", "alias *n names no anchor"}},
	} {
		path := writeLimitsFile(t, "limits.yaml", c.file)
		code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune")
		line := oneErrorLine(t, c.what, stderr)
		if code != exitDataErr || stdout != "" {
			t.Errorf("%s: exit %d, stdout %q; want 65 and nothing", c.what, code, stdout)
		}
		for _, want := range append([]string{"slotctl: " + path + ":", "nothing was changed"}, c.want...) {
			if !strings.Contains(line, want) {
				t.Errorf("%s: error %q lacks %q", c.what, line, want)
			}
		}
	}
	if after := brokerSnapshot(t, e); !reflect.DeepEqual(after, before) {
		t.Errorf("a bad file changed the broker's limits: before %v, after %v", before, after)
	}
}

// oneErrorLine returns stderr's one line, failing t unless it is one line.
func oneErrorLine(t *testing.T, what, stderr string) string {
	t.Helper()
	line := strings.TrimSuffix(stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Errorf("%s: stderr %q, want one line", what, stderr)
	}
	return line
}

// TestApplyCountsEveryProblemOfTheFile: every limit is checked, not only
// up to the first problem: the error names the first and counts the rest.
func TestApplyCountsEveryProblemOfTheFile(t *testing.T) {
	_, err := parseLimitsFile("limits.yaml", []byte("- {name: a, limit: -1}\n- {name: a, limit: 1}\n- {limit: 2, extra: 1}\n"))
	if err == nil || exitCode(err) != exitDataErr {
		t.Fatalf("parse of a file with four problems: %v (exit %d), want an invalid input error", err, exitCode(err))
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "limits.yaml:1:20: ") || !strings.Contains(msg, "(and 3 more problems)") {
		t.Errorf("error %q: want the first problem at 1:20 and 3 more counted", msg)
	}
}

// TestApplyAcceptsTheFileForms: a list, a mapping "limits:" with the
// list, one limit alone (as inspect --json prints it), JSON, and YAML
// anchors, aliases and merge keys all give the same limits.
func TestApplyAcceptsTheFileForms(t *testing.T) {
	want := []desiredLimit{{"db", limitConfig{3, 0, true, false}}, {"api", limitConfig{100, 10, false, false}}}
	for what, file := range map[string]string{
		"a list":              "- name: db\n  limit: 3\n- name: api\n  limit: 100\n  slot_decay_per_second: 10\n  active: false\n",
		"limits: with a list": "limits:\n  - {name: db, limit: 3}\n  - {name: api, limit: 100, slot_decay_per_second: 10.0, active: false}\n",
		"JSON":                `{"limits": [{"name": "db", "limit": 3}, {"name": "api", "limit": 100, "slot_decay_per_second": 10, "active": false}]}`,
		"JSON with tabs":      "[\n\t{\"name\": \"db\", \"limit\": 3},\n\t{\"name\": \"api\", \"limit\": 100, \"slot_decay_per_second\": 1e1, \"active\": false}\n]\n",
		"anchors and merges": "- &small {name: db, limit: &three 3}\n" +
			"- <<: [*small, {active: false}]\n  name: api\n  limit: 100\n  slot_decay_per_second: 10\n",
	} {
		got, err := parseLimitsFile("limits.yaml", []byte(file))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %+v, %v; want %+v", what, got, err, want)
		}
	}
	got, err := parseLimitsFile("db.json", []byte(`{"name": "db", "limit": 3, "slot_decay_per_second": 0, "active": true,
		"created_at": "2026-01-02T03:04:05Z", "active_slots": 1, "denied_slots": 0, "holders": [{"lease_id": "x", "occupy": 1}],
		"waiters": [], "holders_total": 1, "waiters_total": 0, "next_slot_in_ms": 5}`))
	if err != nil || !reflect.DeepEqual(got, want[:1]) {
		t.Errorf("one limit as inspect --json prints it: %+v, %v; want %+v", got, err, want[:1])
	}
	if got, err := parseLimitsFile("none.yaml", []byte("limits: []\n")); err != nil || len(got) != 0 {
		t.Errorf("limits: []: %+v, %v; want no limits and no error", got, err)
	}
}

// TestApplyJSONPrintsThePlan: --json prints the changes with their fields
// before and after, the unchanged limits and those kept though not in the
// file, with --dry-run as well as without.
func TestApplyJSONPrintsThePlan(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {5, 0, true, false}, "batch": {2, 0, false, false}, "old": {1, 0, true, false}})
	for _, dryRun := range []bool{true, false} {
		args := []string{"apply", "-f", "-", "--json"}
		if dryRun {
			args = append(args, "--dry-run")
		}
		code, stdout, stderr := slotctlOn(e, limitsYAML, args...)
		var got applyReport
		if err := json.Unmarshal([]byte(stdout), &got); code != exitOK || err != nil {
			t.Fatalf("apply --json (dry run %t): exit %d, stderr %q, %v in %s", dryRun, code, stderr, err, stdout)
		}
		want := applyReport{File: "-", DryRun: dryRun, Changes: []applyChange{
			{Action: actionUpdate, Name: "db", Fields: []string{"limit"}, From: &limitConfig{5, 0, true, false}, To: &limitConfig{3, 0, true, false}},
			{Action: actionCreate, Name: "api", To: &limitConfig{100, 10, true, false}},
		}, Unchanged: []string{"batch"}, NotInFile: []string{"old"}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("apply --json (dry run %t):\n%s\nwant %+v", dryRun, stdout, want)
		}
	}
}

// TestApplyExitStatuses: usage errors exit 64, an unreadable file too; a
// bad file exits 65 before slotctl connects; an unreachable server 69.
func TestApplyExitStatuses(t *testing.T) {
	good := writeLimitsFile(t, "good.yaml", "- {name: db, limit: 1}\n")
	bad := writeLimitsFile(t, "bad.yaml", "- {name: db, limit: -1}\n")
	unreachable := []string{"-s", "nats://127.0.0.1:1", "--request-timeout", "2s"}
	for _, c := range []struct {
		args []string
		want int
		say  string
	}{
		{[]string{"apply"}, exitUsage, `required flag(s) "filename" not set`},
		{[]string{"apply", good}, exitUsage, "give the file with -f"},
		{[]string{"apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")}, exitUsage, "no such file"},
		{[]string{"apply", "-f", ""}, exitUsage, "-f is empty"},
		{append(unreachable, "apply", "-f", bad), exitDataErr, "field limit: -1 is negative"},
		{append(unreachable, "apply", "-f", good), exitUnavailable, "cannot connect"},
		{append(unreachable, "apply", "-f", "-"), exitDataErr, "<stdin>: no limits in the file"},
	} {
		code, _, stderr := slotctl(c.args...)
		if code != c.want || !strings.Contains(stderr, c.say) {
			t.Errorf("slotctl %s: exit %d, stderr %q; want %d and %q", strings.Join(c.args, " "), code, stderr, c.want, c.say)
		}
	}
}

// TestApplyStopsAtTheFirstFailedChange: when the broker refuses a change
// (here a stand-in: another operator created the limit meanwhile), apply
// stops, names the change and says how many were made before it; the exit
// status is the refusal's.
func TestApplyStopsAtTheFirstFailedChange(t *testing.T) {
	s := jsServer(t, false)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var created []string
	var mu sync.Mutex
	sub, err := nc.Subscribe("slotbroker.v1.>", func(m *nats.Msg) {
		var reply any
		switch m.Subject {
		case "slotbroker.v1.list":
			reply = messages.ListReply{Limits: []messages.LimitInfo{}}
		case "slotbroker.v1.create.a":
			mu.Lock()
			created = append(created, "a")
			mu.Unlock()
			reply = messages.LimitReply{Limit: &messages.LimitInfo{Limit: messages.Limit{Name: "a", Limit: 1, Active: true}}}
		default:
			reply = messages.LimitReply{Error: messages.Errorf(messages.CodeExists, "limit %q already exists: update it, or delete it first", "b")}
		}
		data, _ := messages.Marshal(messages.JSON, reply)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := execute([]string{"-s", s.ClientURL(), "apply", "-f", "-"}, strings.NewReader("- {name: a, limit: 1}\n- {name: b, limit: 2}\n- {name: c, limit: 3}\n"), &stdout, &stderr)
	want := `slotctl: apply: create b: limit "b" already exists: update it, or delete it first; 1 of 3 changes made before it, none after` + "\n"
	if code != exitDataErr || stdout.String() != "created a (limit 1)\n" || stderr.String() != want {
		t.Errorf("apply with a refused change: exit %d, stdout %q, stderr %q; want 65, the change made and %q", code, stdout.String(), stderr.String(), want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(created, []string{"a"}) {
		t.Errorf("limits created: %q, want a alone", created)
	}
}

// TestApplyKnowsEveryFieldOfLsJSON: every field ls --json and inspect
// --json print is one apply reads or one it ignores, so their output
// applies whatever fields the broker's replies gain.
func TestApplyKnowsEveryFieldOfLsJSON(t *testing.T) {
	var tags func(reflect.Type) []string
	tags = func(typ reflect.Type) []string {
		var out []string
		for i := range typ.NumField() {
			field := typ.Field(i)
			if field.Anonymous {
				out = append(out, tags(field.Type)...)
				continue
			}
			out = append(out, strings.Split(field.Tag.Get("json"), ",")[0])
		}
		return out
	}
	for _, tag := range tags(reflect.TypeFor[client.LimitInfo]()) {
		if !slices.Contains(knownFields, tag) && !readOnlyFields[tag] {
			t.Errorf("field %q of ls --json is neither read by apply nor ignored: a file with it is refused", tag)
		}
	}
}

// TestApplyCreatesPerKeyLimitsAndRefusesToFlipPerKey: per_key: true in a
// file creates a per-key limit, and ls --json of it (with its live keys)
// applies as no change; a file that makes an existing limit per-key, or a
// per-key one plain, is refused before anything changes (no update can do
// that), naming the limit and the way out: delete it and apply again.
func TestApplyCreatesPerKeyLimitsAndRefusesToFlipPerKey(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {5, 0, true, false}})
	path := writeLimitsFile(t, "limits.yaml", "- {name: db, limit: 5}\n- {name: tenant, limit: 2, per_key: true}\n")
	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path)
	if code != exitOK || !strings.Contains(stdout, "created tenant (limit 2, per key)") {
		t.Fatalf("apply: exit %d, stdout %q, stderr %q; want tenant created per key", code, stdout, stderr)
	}
	if got := brokerConfigs(t, e)["tenant"]; got != (limitConfig{2, 0, true, true}) {
		t.Fatalf("tenant is %+v, want a per-key limit of 2", got)
	}
	lease, err := e.Client.Acquire(applyContext(t), "tenant", 1, client.WithKey("acme"))
	if err != nil {
		t.Fatalf("acquire a key of the created limit: %v", err)
	}
	defer func() { _ = lease.Release(applyContext(t)) }()
	code, lsJSON, stderr := slotctlOn(e, "", "ls", "--json")
	if code != exitOK || !strings.Contains(lsJSON, `"per_key": true`) || !strings.Contains(lsJSON, `"keys_total": 1`) {
		t.Fatalf("ls --json: exit %d, stderr %q, stdout %s; want tenant per key with its live key", code, stderr, lsJSON)
	}
	if code, stdout, stderr := slotctlOn(e, lsJSON, "apply", "-f", "-", "--prune"); code != exitOK ||
		stdout != "no changes: the broker has the 2 limits of <stdin> as given\n" {
		t.Errorf("apply of ls --json with a per-key limit: exit %d, stdout %q, stderr %q; want no changes", code, stdout, stderr)
	}

	before := brokerSnapshot(t, e)
	for _, c := range []struct{ file, say string }{
		{"- {name: db, limit: 5, per_key: true}\n", `limit "db" is plain on the broker and per_key: true in <stdin>`},
		{"- {name: tenant, limit: 3}\n- {name: db, limit: 6}\n", `limit "tenant" is per-key on the broker and per_key: false in <stdin>`},
	} {
		for _, dry := range []bool{false, true} {
			args := []string{"apply", "-f", "-"}
			if dry {
				args = append(args, "--dry-run")
			}
			code, stdout, stderr := slotctlOn(e, c.file, args...)
			line := oneErrorLine(t, "apply flipping per_key", stderr)
			if code != exitDataErr || stdout != "" || !strings.Contains(line, c.say) ||
				!strings.Contains(line, "slotctl delete") || !strings.HasSuffix(line, "nothing was changed") {
				t.Errorf("apply %q (dry run %t): exit %d, stdout %q, stderr %q; want 65 and %q with the way out", c.file, dry, code, stdout, stderr, c.say)
			}
		}
	}
	if after := brokerSnapshot(t, e); !reflect.DeepEqual(after, before) {
		t.Errorf("a refused apply changed the broker's limits: before %v, after %v", before, after)
	}
	if code, _, stderr := slotctlOn(e, "- {name: x, limit: 1, per_key: yes}\n", "apply", "-f", "-"); code != exitDataErr ||
		!strings.Contains(stderr, `field per_key: the string "yes" is not true or false`) {
		t.Errorf("per_key: yes: exit %d, stderr %q; want 65 naming the field", code, stderr)
	}
}

// TestPruneOfAPerKeyLimitCountsTheHoldersOfItsKeys: apply --prune says how
// many holders and waiters a limit it deletes has ("would delete old (it
// has 1 holder)"), so that --dry-run shows whose leases would be voided.
// A per-key limit holds nothing itself, but deleting it voids the leases of
// all its keys and fails their waiters: those must be counted too.
func TestPruneOfAPerKeyLimitCountsTheHoldersOfItsKeys(t *testing.T) {
	e := applyBroker(t, map[string]limitConfig{"db": {3, 0, true, false}})
	ctx := applyContext(t)
	if _, err := e.Client.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Acquire(ctx, "tenant", 1, client.WithKey("acme")); err != nil {
		t.Fatal(err)
	}
	path := writeLimitsFile(t, "limits.yaml", "- name: db\n  limit: 3\n")
	code, stdout, stderr := slotctlOn(e, "", "apply", "-f", path, "--prune", "--dry-run")
	lines := outputLines(stdout)
	if code != exitOK || len(lines) == 0 || !strings.HasPrefix(lines[0], "would delete tenant (") || !strings.Contains(lines[0], "1 holder") {
		t.Errorf("apply --prune --dry-run with tenant's key acme held: exit %d, stdout %q, stderr %q; want \"would delete tenant (it has 1 holder)\" or the like first",
			code, stdout, stderr)
	}
}
