package main

import (
	"strings"
	"testing"

	"github.com/slotbroker/slotbroker/broker"
)

// oneLine fails t unless stderr is exactly one "slotctl: " line.
func oneLine(t *testing.T, what, stderr string) string {
	t.Helper()
	line := strings.TrimSuffix(stderr, "\n")
	if !strings.HasPrefix(line, "slotctl: ") || strings.Contains(line, "\n") {
		t.Errorf("%s: stderr %q, want one \"slotctl: \" line", what, stderr)
	}
	return line
}

// TestUnknownVerbSuggestsTheNearest: a misspelled verb is reported as an
// unknown command with the nearest verbs suggested, whatever flags follow
// it (they belong to the verb meant, not to slotctl itself).
func TestUnknownVerbSuggestsTheNearest(t *testing.T) {
	for _, c := range []struct {
		args    []string
		suggest string
	}{
		{[]string{"craete", "db", "--limit", "3"}, `"create"`},
		{[]string{"craete", "db"}, `"create"`},
		{[]string{"--request-timeout", "2s", "inpsect", "db", "--json"}, `"inspect"`},
		{[]string{"sttaus"}, `"status"`},
		{[]string{"rn", "db", "--", "true"}, `"run"`},
	} {
		what := "slotctl " + strings.Join(c.args, " ")
		verb := c.args[0]
		if verb == "--request-timeout" {
			verb = c.args[2]
		}
		code, _, stderr := slotctl(c.args...)
		line := oneLine(t, what, stderr)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want 64", what, code)
		}
		if !strings.Contains(line, `unknown command "`+verb+`"`) || !strings.Contains(line, "did you mean "+c.suggest) {
			t.Errorf("%s: stderr %q; want unknown command %q and did you mean %s", what, stderr, verb, c.suggest)
		}
	}
	// Nothing near: no suggestion, but the list of verbs is in the help.
	code, _, stderr := slotctl("frobnicate")
	if line := oneLine(t, "slotctl frobnicate", stderr); code != exitUsage || !strings.Contains(line, `unknown command "frobnicate"`) ||
		strings.Contains(line, "did you mean") || !strings.Contains(line, "'slotctl --help'") {
		t.Errorf("slotctl frobnicate: exit %d, stderr %q", code, stderr)
	}
	// A known verb with a bad flag keeps the flag's error.
	code, _, stderr = slotctl("--bogus", "ls")
	if line := oneLine(t, "slotctl --bogus ls", stderr); code != exitUsage || !strings.Contains(line, "unknown flag: --bogus") {
		t.Errorf("slotctl --bogus ls: exit %d, stderr %q; want the unknown flag", code, stderr)
	}
}

// TestHelpHintsNameTheCommandOnce: the "(see '... --help')" hint of a usage
// error names the command's path once: "slotctl --help", "slotctl ls --help".
func TestHelpHintsNameTheCommandOnce(t *testing.T) {
	for _, c := range []struct {
		args []string
		hint string
	}{
		{[]string{"--bogus"}, "(see 'slotctl --help')"},
		{[]string{"ls", "--bogus"}, "(see 'slotctl ls --help')"},
		{[]string{"create", "db", "--limt", "3"}, "(see 'slotctl create --help')"},
		{[]string{"completion", "bash", "--bogus"}, "(see 'slotctl completion bash --help')"},
	} {
		what := "slotctl " + strings.Join(c.args, " ")
		code, _, stderr := slotctl(c.args...)
		if line := oneLine(t, what, stderr); code != exitUsage || !strings.HasSuffix(line, c.hint) || strings.Contains(line, "slotctl slotctl") {
			t.Errorf("%s: exit %d, stderr %q; want 64 and the hint %s", what, code, stderr, c.hint)
		}
	}
}

// TestVersionNamesSlotctlOnce: --version prints "slotctl <version>", the
// version of the slotbroker module it was built from.
func TestVersionNamesSlotctlOnce(t *testing.T) {
	code, stdout, stderr := slotctl("--version")
	if want := "slotctl " + broker.Version + "\n"; code != exitOK || stdout != want || stderr != "" {
		t.Errorf("slotctl --version: exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
}

// TestCompletionCommandIsAvailable: cobra's completion command is there and
// listed: slotctl completion bash|zsh|fish|powershell prints the script.
func TestCompletionCommandIsAvailable(t *testing.T) {
	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef slotctl", "fish": "complete -c slotctl", "powershell": "Register-ArgumentCompleter"} {
		code, stdout, stderr := slotctl("completion", shell)
		if code != exitOK || !strings.Contains(stdout, want) || stderr != "" {
			t.Errorf("slotctl completion %s: exit %d, stderr %q, stdout lacks %q: %.200q", shell, code, stderr, want, stdout)
		}
	}
	_, stdout, _ := slotctl("--help")
	if !strings.Contains(stdout, "\n  completion ") {
		t.Errorf("slotctl --help does not list the completion command:\n%s", stdout)
	}
	// Completion of verbs works through the hidden __complete command.
	_, stdout, _ = slotctl("__complete", "cr")
	if !strings.Contains(stdout, "create") {
		t.Errorf("slotctl __complete cr: %q, want create", stdout)
	}
}

// verbs are slotctl's own commands.
var verbs = []string{"create", "inspect", "ls", "update", "enable", "disable", "delete", "run", "rate", "watch", "status", "top", "revoke"}

// TestEveryVerbHasAnExample: each verb's --help shows an Examples section
// that uses the verb.
func TestEveryVerbHasAnExample(t *testing.T) {
	for _, verb := range verbs {
		code, stdout, _ := slotctl(verb, "--help")
		i := strings.Index(stdout, "\nExamples:\n")
		if code != exitOK || i < 0 || !strings.Contains(stdout[i:], "slotctl "+verb) {
			t.Errorf("slotctl %s --help: exit %d, no example of slotctl %s:\n%s", verb, code, verb, stdout)
		}
	}
}
