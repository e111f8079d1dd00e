package main

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// helpHint is " (see '<command path> --help')", naming slotctl once.
func helpHint(cmd *cobra.Command) string {
	return fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
}

// flagError is the usage error of a flag cobra could not parse. On slotctl
// itself a word before the bad flag is a verb slotctl does not know, and
// the flag is the one of the verb meant ("slotctl craete db --limit 3"):
// that is reported as the unknown command.
func flagError(cmd *cobra.Command, err error) error {
	if !cmd.HasParent() {
		if args := cmd.Flags().Args(); len(args) > 0 {
			return unknownCommand(cmd, args[0])
		}
	}
	return &msgError{msg: err.Error() + helpHint(cmd), kind: errUsage}
}

// rootArgs is slotctl's own Args check: it takes no arguments, so a word is
// a verb it does not know.
func rootArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(cmd, args[0])
	}
	return nil
}

// unknownCommand reports verb as unknown, with the nearest verbs.
func unknownCommand(root *cobra.Command, verb string) error {
	msg := fmt.Sprintf("unknown command %q", verb)
	if near := nearestVerbs(root, verb); len(near) > 0 {
		quoted := make([]string, len(near))
		for i, v := range near {
			quoted[i] = fmt.Sprintf("%q", v)
		}
		msg += ": did you mean " + strings.Join(quoted, " or ") + "?"
	}
	return &msgError{msg: displayText(msg) + helpHint(root), kind: errUsage}
}

// nearestVerbs are cobra's suggestions for verb (a Levenshtein distance of
// at most root.SuggestionsMinimumDistance, or verb is a prefix), nearest
// first: the verbs verb begins, shortest first, then by distance.
func nearestVerbs(root *cobra.Command, verb string) []string {
	near := root.SuggestionsFor(verb)
	verb = strings.ToLower(verb)
	rank := func(v string) int {
		if strings.HasPrefix(v, verb) {
			return len(v) - len(verb) - 1000
		}
		return levenshtein(verb, v)
	}
	sort.SliceStable(near, func(i, j int) bool { return rank(near[i]) < rank(near[j]) })
	return near
}

// levenshtein is the edit distance between a and b, in bytes.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// runFlagError is run's flag error: a flag unknown to run that follows the
// limit names and the command's first word is the command's own, which
// slotctl took for its own for want of "--" before the command. It says so,
// with the command line to type.
func runFlagError(cmd *cobra.Command, err error) error {
	args := cmd.Flags().Args()
	var unknown *pflag.NotExistError
	if len(args) < 2 || !errors.As(err, &unknown) {
		return flagError(cmd, err)
	}
	flag := "--" + unknown.GetSpecifiedName()
	if short := unknown.GetSpecifiedShortnames(); short != "" {
		flag = "-" + short
	}
	words := make([]string, 0, len(args))
	for _, w := range args[1:] {
		words = append(words, shellQuote(w))
	}
	example := fmt.Sprintf("slotctl run %s -- %s %s ...", shellQuote(args[0]), strings.Join(words, " "), shellQuote(flag))
	return &msgError{msg: displayText(fmt.Sprintf("%v: put -- before the command, so that slotctl does not take its flags for run's: %s", err, example)) + helpHint(cmd), kind: errUsage}
}
