package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// maxSlotDecay is the largest slot_decay_per_second the broker accepts (its
// maxDecay): apply checks a file against it before changing anything.
const maxSlotDecay = 1e6

// stdinName shows standard input (-f -) in messages.
const stdinName = "<stdin>"

// Actions of an applyChange.
const (
	actionCreate = "create"
	actionUpdate = "update"
	actionDelete = "delete"
)

// limitConfig is what apply sets of a limit: the fields of its file entry
// besides the name, with the JSON names of messages.Limit.
type limitConfig struct {
	Limit              int     `json:"limit"`
	SlotDecayPerSecond float64 `json:"slot_decay_per_second"`
	Active             bool    `json:"active"`
	// PerKey is set only by a create: no update changes it (planApply).
	PerKey bool `json:"per_key,omitempty"`
}

// configOf is the part of info that apply sets.
func configOf(info *client.LimitInfo) limitConfig {
	return limitConfig{Limit: info.Limit.Limit, SlotDecayPerSecond: info.SlotDecayPerSecond, Active: info.Active, PerKey: info.PerKey}
}

// desiredLimit is one limit of an apply file.
type desiredLimit struct {
	name string
	cfg  limitConfig
}

// applyChange is one step of an apply: a limit to create, update or delete.
type applyChange struct {
	Action string `json:"action"`
	Name   string `json:"name"`
	// Fields names the fields an update changes.
	Fields []string `json:"fields,omitempty"`
	// From is the limit before an update or a delete.
	From *limitConfig `json:"from,omitempty"`
	// To is the limit after a create or an update.
	To *limitConfig `json:"to,omitempty"`

	// holders and waiters count those of a limit to delete.
	holders, waiters int
}

// applyReport is apply's outcome: the plan with --dry-run, else the changes
// made (all of them, unless a request failed). It is the --json output.
type applyReport struct {
	File    string        `json:"file"`
	DryRun  bool          `json:"dry_run"`
	Changes []applyChange `json:"changes"`
	// Unchanged lists the limits of the file that the broker has as given.
	Unchanged []string `json:"unchanged"`
	// NotInFile lists the broker's limits that the file lacks, kept
	// without --prune.
	NotInFile []string `json:"not_in_file"`

	// display shows the file in the summary: its path, or <stdin>.
	display string
}

// applyCmd is "slotctl apply -f FILE": it makes the broker's limits match a file.
func (a *app) applyCmd() *cobra.Command {
	var (
		file                           string
		prune, dryRun, verbose, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--prune] [--dry-run] [-v] [--json]",
		Short: "Create and update limits to match a YAML or JSON file (--prune deletes the others)",
		Long: `apply makes the broker's limits match a file: it creates the limits the
broker lacks and updates those that differ; with --prune it also deletes the
limits that are not in the file (their leases are voided, their waiters
fail). Running it again changes nothing.

The file (YAML, or JSON, which is YAML too; "-f -" reads standard input) is a
list of limits, or a mapping "limits:" with that list, or a single limit. A
limit has the fields of "slotctl ls --json": name and limit (required),
slot_decay_per_second (default 0: not a rate limit), active (default true)
and per_key (default false: true makes a per-key limit, as create --per-key).
The other fields of ls --json (active_slots, holders, keys, ...) are
ignored, so its output can be applied as it is:

  limits:
    - name: db
      limit: 5
    - name: api
      limit: 100
      slot_decay_per_second: 10

Every limit of the file is checked before anything changes: a bad file exits
65 naming the file, the line and the field. No update makes a limit per-key or
plain: when per_key differs from the broker's, apply changes nothing and exits
65; delete the limit (slotctl delete NAME) and apply again to create it anew.`,
		Example: `  slotctl apply -f limits.yaml --dry-run          # print what would change
  slotctl apply -f limits.yaml                    # make the changes
  slotctl apply -f limits.yaml --prune            # and delete the limits that are not in the file
  slotctl ls --json | slotctl apply -f - --dry-run   # the broker's own limits: no changes`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("apply takes no arguments, got %q: give the file with -f (see 'slotctl apply --help')", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			display, data, err := a.readApplyFile(file)
			if err != nil {
				return err
			}
			want, err := parseLimitsFile(display, data)
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			current, err := cl.ListLimits(ctx)
			cancel()
			if err != nil {
				return err
			}
			rep := planApply(file, want, current, prune)
			if err := perKeyChanges(display, want, current); err != nil {
				return err
			}
			rep.DryRun, rep.display = dryRun, display
			if dryRun {
				if asJSON {
					return printJSON(a.stdout, rep)
				}
				return printApply(a.stdout, rep, rep.Changes, verbose)
			}
			plan := rep.Changes
			rep.Changes = make([]applyChange, 0, len(plan))
			for _, c := range plan {
				if err := a.applyOne(cmd, cl, c); err != nil {
					if asJSON {
						_ = printJSON(a.stdout, rep)
					}
					return &msgError{kind: err, msg: fmt.Sprintf("apply: %s %s: %s; %d of %d changes made before it, none after",
						c.Action, c.Name, strings.TrimPrefix(err.Error(), "slotbroker: "), len(rep.Changes), len(plan))}
				}
				rep.Changes = append(rep.Changes, c)
				if !asJSON {
					if _, err := fmt.Fprintln(a.stdout, c.line(false)); err != nil {
						return err
					}
				}
			}
			if asJSON {
				return printJSON(a.stdout, rep)
			}
			return printApply(a.stdout, rep, nil, verbose)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", `file of limits, YAML or JSON ("-" reads standard input) (required)`)
	f.BoolVar(&prune, "prune", false, "delete the limits that are not in the file")
	f.BoolVar(&dryRun, "dry-run", false, "print the changes without making them")
	f.BoolVarP(&verbose, "verbose", "v", false, "also print the limits that are unchanged, or kept though not in the file")
	f.BoolVar(&asJSON, "json", false, "print the changes (the plan, with --dry-run) as JSON")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// readApplyFile reads the file of -f, standard input for "-", and returns
// the name messages show for it with its contents.
func (a *app) readApplyFile(path string) (string, []byte, error) {
	if path == "" {
		return "", nil, usageError("apply: -f is empty: give a file of limits, or - for standard input")
	}
	if path == "-" {
		data, err := io.ReadAll(a.stdin)
		if err != nil {
			return "", nil, fmt.Errorf("apply: read standard input: %v", err)
		}
		return stdinName, data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", nil, usageError("apply: cannot read %s: %v", path, err)
	}
	return path, data, nil
}

// applyOne makes one change on the broker.
func (a *app) applyOne(cmd *cobra.Command, cl *client.Client, c applyChange) error {
	ctx, cancel := a.requestContext(cmd.Context())
	defer cancel()
	var err error
	switch c.Action {
	case actionCreate:
		var opts []client.LimitOption
		if c.To.SlotDecayPerSecond != 0 {
			opts = append(opts, client.WithSlotDecay(c.To.SlotDecayPerSecond))
		}
		if !c.To.Active {
			opts = append(opts, client.WithInactive())
		}
		if c.To.PerKey {
			opts = append(opts, client.PerKey())
		}
		_, err = cl.CreateLimit(ctx, c.Name, c.To.Limit, opts...)
	case actionUpdate:
		var u client.LimitUpdate
		for _, field := range c.Fields {
			switch field {
			case "limit":
				u.Limit = client.Ptr(c.To.Limit)
			case "slot_decay_per_second":
				u.SlotDecayPerSecond = client.Ptr(c.To.SlotDecayPerSecond)
			case "active":
				u.Active = client.Ptr(c.To.Active)
			}
		}
		_, err = cl.UpdateLimit(ctx, c.Name, u)
	case actionDelete:
		_, err = cl.DeleteLimit(ctx, c.Name)
	}
	return err
}

// planApply compares the limits the file wants (file is the path given to
// -f) with the broker's: creates and updates in the file's order, then (with
// prune) deletes in name order.
func planApply(file string, want []desiredLimit, current []client.LimitInfo, prune bool) *applyReport {
	rep := &applyReport{File: file, Changes: []applyChange{}, Unchanged: []string{}, NotInFile: []string{}}
	have := make(map[string]*client.LimitInfo, len(current))
	for i := range current {
		have[current[i].Name] = &current[i]
	}
	inFile := make(map[string]bool, len(want))
	for _, w := range want {
		inFile[w.name] = true
		to := w.cfg
		info := have[w.name]
		if info == nil {
			rep.Changes = append(rep.Changes, applyChange{Action: actionCreate, Name: w.name, To: &to})
			continue
		}
		from := configOf(info)
		var fields []string
		if from.Limit != to.Limit {
			fields = append(fields, "limit")
		}
		if from.SlotDecayPerSecond != to.SlotDecayPerSecond {
			fields = append(fields, "slot_decay_per_second")
		}
		if from.Active != to.Active {
			fields = append(fields, "active")
		}
		if len(fields) == 0 {
			rep.Unchanged = append(rep.Unchanged, w.name)
			continue
		}
		rep.Changes = append(rep.Changes, applyChange{Action: actionUpdate, Name: w.name, Fields: fields, From: &from, To: &to})
	}
	for i := range current {
		info := &current[i]
		if inFile[info.Name] {
			continue
		}
		if !prune {
			rep.NotInFile = append(rep.NotInFile, info.Name)
			continue
		}
		from := configOf(info)
		// A per-key limit's totals are its keys', which go with it.
		rep.Changes = append(rep.Changes, applyChange{Action: actionDelete, Name: info.Name, From: &from,
			holders: max(info.HoldersTotal, len(info.Holders)), waiters: max(info.WaitersTotal, len(info.Waiters))})
	}
	return rep
}

// perKeyChanges refuses a file that makes a limit of the broker per-key or
// plain: no update changes per_key (a family's keys and a plain limit's
// leases could not carry over), so that takes a delete and a create, which
// void the limit's leases and fail its waiters: apply leaves that to the
// operator, and changes nothing. display shows the file.
func perKeyChanges(display string, want []desiredLimit, current []client.LimitInfo) error {
	have := make(map[string]*client.LimitInfo, len(current))
	for i := range current {
		have[current[i].Name] = &current[i]
	}
	var problems []string
	for _, w := range want {
		info := have[w.name]
		if info == nil || info.PerKey == w.cfg.PerKey {
			continue
		}
		now, file := "plain", "per_key: true"
		if info.PerKey {
			now, file = "per-key", "per_key: false"
		}
		problems = append(problems, fmt.Sprintf("limit %q is %s on the broker and %s in %s: per_key cannot be changed by an update; "+
			"delete the limit (slotctl delete %s, which voids its leases and fails its waiters) and apply again to create it anew",
			w.name, now, file, display, w.name))
	}
	if len(problems) == 0 {
		return nil
	}
	msg := "apply: " + problems[0]
	if n := len(problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %s)", plural(n, "more such limit"))
	}
	return &msgError{msg: msg + "; nothing was changed", kind: client.ErrInvalidArgument}
}

// line describes c in one line: what was done, or with dryRun what would be.
func (c *applyChange) line(dryRun bool) string {
	verb := map[string]string{actionCreate: "created", actionUpdate: "updated", actionDelete: "deleted"}[c.Action]
	if dryRun {
		verb = "would " + c.Action
	}
	name := displayText(c.Name)
	switch c.Action {
	case actionCreate:
		d := "limit " + strconv.Itoa(c.To.Limit)
		if c.To.SlotDecayPerSecond != 0 {
			d += ", slot decay " + formatFloat(c.To.SlotDecayPerSecond) + "/s"
		}
		if !c.To.Active {
			d += ", inactive"
		}
		if c.To.PerKey {
			d += ", per key"
		}
		return fmt.Sprintf("%s %s (%s)", verb, name, d)
	case actionUpdate:
		diffs := make([]string, 0, len(c.Fields))
		for _, field := range c.Fields {
			switch field {
			case "limit":
				diffs = append(diffs, fmt.Sprintf("limit %d -> %d", c.From.Limit, c.To.Limit))
			case "slot_decay_per_second":
				diffs = append(diffs, fmt.Sprintf("slot_decay_per_second %s -> %s", formatFloat(c.From.SlotDecayPerSecond), formatFloat(c.To.SlotDecayPerSecond)))
			case "active":
				diffs = append(diffs, fmt.Sprintf("active %t -> %t", c.From.Active, c.To.Active))
			}
		}
		return fmt.Sprintf("%s %s: %s", verb, name, strings.Join(diffs, ", "))
	default:
		var who []string
		if c.holders > 0 {
			who = append(who, plural(c.holders, "holder"))
		}
		if c.waiters > 0 {
			who = append(who, plural(c.waiters, "waiter"))
		}
		if len(who) == 0 {
			return verb + " " + name
		}
		had := "had"
		if dryRun {
			had = "has"
		}
		return fmt.Sprintf("%s %s (it %s %s)", verb, name, had, strings.Join(who, " and "))
	}
}

// plural is "1 holder" or "n holders".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// printApply prints the lines of changes (those not yet printed), with
// verbose the unchanged and kept limits, and a summary line.
func printApply(w io.Writer, rep *applyReport, changes []applyChange, verbose bool) error {
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.line(rep.DryRun) + "\n")
	}
	if verbose {
		for _, name := range rep.Unchanged {
			fmt.Fprintf(&b, "unchanged %s\n", displayText(name))
		}
		for _, name := range rep.NotInFile {
			fmt.Fprintf(&b, "kept %s: not in the file (--prune deletes it)\n", displayText(name))
		}
	}
	b.WriteString(applySummary(rep) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// applySummary is the last line of apply's output.
func applySummary(rep *applyReport) string {
	counts := map[string]int{}
	for _, c := range rep.Changes {
		counts[c.Action]++
	}
	var s string
	switch {
	case len(rep.Changes) == 0 && len(rep.Unchanged) == 0:
		s = fmt.Sprintf("no changes: %s lists no limits", rep.display)
	case len(rep.Changes) == 0:
		s = fmt.Sprintf("no changes: the broker has the %s of %s as given", plural(len(rep.Unchanged), "limit"), rep.display)
	default:
		var parts []string
		for _, action := range []string{actionCreate, actionUpdate, actionDelete} {
			if n := counts[action]; n > 0 && rep.DryRun {
				parts = append(parts, fmt.Sprintf("%d to %s", n, action))
			} else if n > 0 {
				parts = append(parts, fmt.Sprintf("%d %sd", n, action))
			}
		}
		if n := len(rep.Unchanged); n > 0 {
			parts = append(parts, fmt.Sprintf("%d unchanged", n))
		}
		s = fmt.Sprintf("applied %s: %s", rep.display, strings.Join(parts, ", "))
		if rep.DryRun {
			s = fmt.Sprintf("dry run of %s: %s", rep.display, strings.Join(parts, ", "))
		}
	}
	switch n := len(rep.NotInFile); {
	case n == 1:
		s += "; 1 limit not in the file, kept (--prune deletes it)"
	case n > 1:
		s += fmt.Sprintf("; %d limits not in the file, kept (--prune deletes them)", n)
	}
	if rep.DryRun && len(rep.Changes) > 0 {
		s += "; nothing was changed"
	}
	return s
}

// knownFields are the fields apply reads; readOnlyFields are the other
// fields of ls --json, accepted and ignored.
var (
	knownFields    = []string{"name", "limit", "slot_decay_per_second", "active", "per_key"}
	readOnlyFields = map[string]bool{"created_at": true, "updated_at": true, "active_slots": true, "denied_slots": true,
		"next_slot_in_ms": true, "holders": true, "waiters": true, "holders_total": true, "waiters_total": true,
		"key": true, "keys": true, "keys_total": true}
)

// maxAliasDepth bounds how many aliases and merges apply follows in a row.
const maxAliasDepth = 32

// limitsFile parses one apply file and collects its problems.
type limitsFile struct {
	// name shows the file in messages: its path, or <stdin>.
	name string
	// aliases maps each alias to the node its anchor marked where it occurs.
	aliases map[*ast.AliasNode]ast.Node
	// problems are the file's problems, in the order found.
	problems []string
}

// parseLimitsFile parses and checks a file of limits, all of it: the error
// names the first problem by file, line, column and field, and counts the
// others. name shows the file in messages.
func parseLimitsFile(name string, data []byte) ([]desiredLimit, error) {
	f := &limitsFile{name: name, aliases: map[*ast.AliasNode]ast.Node{}}
	want := f.parse(data)
	if len(f.problems) == 0 {
		return want, nil
	}
	msg := f.problems[0]
	if n := len(f.problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %s)", plural(n, "more problem"))
	}
	return nil, &msgError{msg: msg + "; nothing was changed", kind: client.ErrInvalidArgument}
}

// parse returns the limits of the file; problems are recorded in f.
func (f *limitsFile) parse(data []byte) []desiredLimit {
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) && ye.GetToken() != nil {
			f.problemAt(ye.GetToken(), "not valid YAML: %s", ye.GetMessage())
		} else {
			f.problems = append(f.problems, fmt.Sprintf("%s: not valid YAML: %v", f.name, err))
		}
		return nil
	}
	var docs []ast.Node
	for _, d := range file.Docs {
		if d.Body != nil {
			docs = append(docs, d.Body)
		}
	}
	if len(docs) == 0 {
		f.problems = append(f.problems, fmt.Sprintf("%s: no limits in the file: give a list of limits, or [] for none "+
			"(an empty file is refused, so that --prune never deletes every limit by mistake)", f.name))
		return nil
	}
	if len(docs) > 1 {
		f.problem(docs[1], "a second YAML document: give all the limits in one")
		return nil
	}
	f.collectAnchors(docs[0], map[string]ast.Node{})
	body, ok := f.resolve(docs[0])
	if !ok {
		return nil
	}
	var items []ast.Node
	switch n := body.(type) {
	case *ast.SequenceNode:
		items = n.Values
	case *ast.MappingNode:
		entries, ok := f.entries(n, 0)
		if !ok {
			return nil
		}
		var list *mapEntry
		hasName := false
		for i := range entries {
			switch entries[i].key {
			case "limits":
				list = &entries[i]
			case "name":
				hasName = true
			}
		}
		switch {
		case list == nil && hasName:
			items = []ast.Node{n} // a single limit, as inspect --json prints it
		case list == nil:
			f.problem(n, `the top level is a mapping without "limits": give a list of limits, "limits:" with the list, or one limit`)
			return nil
		default:
			for _, e := range entries {
				if e.key != "limits" {
					f.problem(e.keyNode, `unknown top-level field %q: the top level has only "limits" (or is the list itself)`, e.key)
				}
			}
			seq, ok := f.resolve(list.value)
			if !ok {
				return nil
			}
			s, isSeq := seq.(*ast.SequenceNode)
			if !isSeq {
				f.problem(list.value, `"limits" must be a list of limits, not %s: give [] for none`, describeNode(seq))
				return nil
			}
			items = s.Values
		}
	default:
		f.problem(body, "the top level is %s: give a list of limits, a mapping \"limits:\" with the list, or one limit", describeNode(body))
		return nil
	}
	want := make([]desiredLimit, 0, len(items))
	firstLine := map[string]int{}
	for i, item := range items {
		d, nameTok, ok := f.limit(i+1, item)
		if d.name != "" {
			if line, dup := firstLine[d.name]; dup {
				f.problemAt(nameTok, "limit %q: field name: %q is in the file twice (first at line %d): give each limit once", d.name, d.name, line)
				continue
			}
			firstLine[d.name] = 0
			if nameTok != nil {
				firstLine[d.name] = nameTok.Position.Line
			}
		}
		if ok {
			want = append(want, d)
		}
	}
	return want
}

// mapEntry is one entry of a mapping, with merged entries resolved.
type mapEntry struct {
	key     string
	keyNode ast.Node
	value   ast.Node
}

// limit reads the index-th (1-based) item of the list: the limit (its name
// set if the name is good), the token of its name, and false when it has a
// problem.
func (f *limitsFile) limit(index int, item ast.Node) (desiredLimit, *token.Token, bool) {
	before := len(f.problems)
	node, ok := f.resolve(item)
	if !ok {
		return desiredLimit{}, nil, false
	}
	m, isMap := node.(*ast.MappingNode)
	if !isMap {
		f.problem(item, "limit #%d is %s: give a mapping with name and limit", index, describeNode(node))
		return desiredLimit{}, nil, false
	}
	entries, ok := f.entries(m, 0)
	if !ok {
		return desiredLimit{}, nil, false
	}
	d := desiredLimit{cfg: limitConfig{Active: true}}
	who := fmt.Sprintf("limit #%d", index)
	var nameTok *token.Token
	// The name first: the messages about the other fields name the limit.
	for _, e := range entries {
		if e.key != "name" {
			continue
		}
		nameTok = tokenOf(e.value)
		name, ok := f.nameValue(who, e.value)
		if !ok {
			break
		}
		if ve := messages.ValidateName(name); ve != nil {
			f.problem(e.value, "%s: field name: %s", who, ve.Message)
			break
		}
		d.name, who = name, fmt.Sprintf("limit %q", name)
	}
	if nameTok == nil {
		f.problem(m, "%s has no name: give each limit a name", who)
	}
	hasLimit, limitOK, decayOK := false, false, false
	for _, e := range entries {
		switch e.key {
		case "name":
		case "limit":
			hasLimit = true
			d.cfg.Limit, limitOK = f.limitValue(who, e.value)
		case "slot_decay_per_second":
			d.cfg.SlotDecayPerSecond, decayOK = f.decayValue(who, e.value)
		case "active":
			d.cfg.Active, _ = f.boolValue(who, "active", e.value)
		case "per_key":
			d.cfg.PerKey, _ = f.boolValue(who, "per_key", e.value)
		default:
			if !readOnlyFields[e.key] {
				f.problem(e.keyNode, "%s: unknown field %q: the fields are %s (the other fields of ls --json are ignored)",
					who, e.key, strings.Join(knownFields, ", "))
			}
		}
	}
	if !hasLimit {
		f.problem(m, "%s has no limit: give its number of slots (limit: N)", who)
	}
	if limitOK && decayOK && d.cfg.SlotDecayPerSecond > 0 && float64(d.cfg.Limit)/d.cfg.SlotDecayPerSecond > messages.MaxDrain.Seconds() {
		for _, e := range entries {
			if e.key == "slot_decay_per_second" {
				f.problem(e.value, "%s: field slot_decay_per_second: %s is too slow for a limit of %d: a full bucket would take more than %.0f years to drain; give at least %g",
					who, formatFloat(d.cfg.SlotDecayPerSecond), d.cfg.Limit, messages.MaxDrain.Hours()/(365*24), float64(d.cfg.Limit)/messages.MaxDrain.Seconds())
			}
		}
	}
	return d, nameTok, len(f.problems) == before
}

// nameValue reads a name: a string (or digits, which YAML reads as a number).
func (f *limitsFile) nameValue(who string, n ast.Node) (string, bool) {
	v, ok := f.resolve(n)
	if !ok {
		return "", false
	}
	switch s := v.(type) {
	case *ast.StringNode:
		return s.Value, true
	case *ast.LiteralNode:
		return s.Value.Value, true
	case *ast.IntegerNode:
		return s.GetToken().Value, true
	}
	f.problem(n, "%s: field name: %s is not a name: give a string", who, describeNode(v))
	return "", false
}

// limitValue reads a number of slots: a whole number from 1 to
// messages.MaxLimit (0 is refused, as by create: a limit of 0 slots could
// never grant one; "active: false" stops enforcing a limit).
func (f *limitsFile) limitValue(who string, n ast.Node) (int, bool) {
	v, ok := f.resolve(n)
	if !ok {
		return 0, false
	}
	bad := func(format string, args ...any) (int, bool) {
		f.problem(n, "%s: field limit: %s: give 1 to %d slots", who, fmt.Sprintf(format, args...), messages.MaxLimit)
		return 0, false
	}
	if x, isNum := plainNumber(v); isNum {
		v = &ast.FloatNode{BaseNode: &ast.BaseNode{}, Token: v.GetToken(), Value: x}
	}
	switch num := v.(type) {
	case *ast.IntegerNode:
		switch i := num.Value.(type) {
		case int64:
			if i < 0 {
				return bad("%d is negative", i)
			}
			if i == 0 {
				return bad("0 slots could never be granted (to stop enforcing the limit, set active: false)")
			}
			if i > messages.MaxLimit {
				return bad("%d is too large", i)
			}
			return int(i), true
		case uint64:
			if i == 0 {
				return bad("0 slots could never be granted (to stop enforcing the limit, set active: false)")
			}
			if i > messages.MaxLimit {
				return bad("%d is too large", i)
			}
			return int(i), true
		}
	case *ast.FloatNode:
		switch x := num.Value; {
		case x != math.Trunc(x):
			return bad("%s is not a whole number", formatFloat(x))
		case x < 0:
			return bad("%s is negative", formatFloat(x))
		case x == 0:
			return bad("0 slots could never be granted (to stop enforcing the limit, set active: false)")
		case x > messages.MaxLimit:
			return bad("%s is too large", formatFloat(x))
		default:
			return int(x), true
		}
	}
	return bad("%s is not a number", describeNode(v))
}

// decayValue reads a slot decay: a finite number from 0 to maxSlotDecay.
func (f *limitsFile) decayValue(who string, n ast.Node) (float64, bool) {
	v, ok := f.resolve(n)
	if !ok {
		return 0, false
	}
	var x float64
	switch num := v.(type) {
	case *ast.IntegerNode:
		switch i := num.Value.(type) {
		case int64:
			x = float64(i)
		case uint64:
			x = float64(i)
		}
	case *ast.FloatNode:
		x = num.Value
	default:
		var isNum bool
		if x, isNum = plainNumber(v); !isNum {
			x = math.NaN()
		}
	}
	var problem string
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		problem = describeNode(v) + " is not a finite number"
	case x < 0:
		problem = formatFloat(x) + " is negative"
	case x > maxSlotDecay:
		problem = formatFloat(x) + " is too fast"
	default:
		return x, true
	}
	f.problem(n, "%s: field slot_decay_per_second: %s: give 0 (not a rate limit) to %g slots per second", who, problem, float64(maxSlotDecay))
	return 0, false
}

// yamlFloat is a number in YAML 1.2's core schema (and in JSON).
var yamlFloat = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)

// plainNumber reads a number the parser left a string though YAML 1.2 and
// JSON read it as a number: an unquoted 1e-07, as encoding/json writes
// small and large floats.
func plainNumber(n ast.Node) (float64, bool) {
	s, ok := n.(*ast.StringNode)
	if !ok || s.Token == nil || s.Token.Type != token.StringType || !yamlFloat.MatchString(s.Value) {
		return 0, false
	}
	x, err := strconv.ParseFloat(s.Value, 64)
	return x, err == nil
}

// boolValue reads a field that is true or false: active, per_key.
func (f *limitsFile) boolValue(who, field string, n ast.Node) (bool, bool) {
	v, ok := f.resolve(n)
	if !ok {
		return false, false
	}
	if b, isBool := v.(*ast.BoolNode); isBool {
		return b.Value, true
	}
	f.problem(n, "%s: field %s: %s is not true or false", who, field, describeNode(v))
	return false, false
}

// entries lists the entries of m, each key once: its own, then those of
// the mappings it merges ("<<: *base") that it does not override, the
// first merged mapping winning.
func (f *limitsFile) entries(m *ast.MappingNode, depth int) ([]mapEntry, bool) {
	var own, merged []mapEntry
	for _, mv := range m.Values {
		if !mv.Key.IsMergeKey() {
			own = append(own, mapEntry{key: f.keyText(mv.Key), keyNode: mv.Key, value: mv.Value})
			continue
		}
		if depth >= maxAliasDepth {
			f.problem(mv.Key, "merges nest deeper than %d", maxAliasDepth)
			return nil, false
		}
		v, ok := f.resolve(mv.Value)
		if !ok {
			return nil, false
		}
		sources := []ast.Node{v}
		if seq, isSeq := v.(*ast.SequenceNode); isSeq {
			sources = seq.Values
		}
		for _, src := range sources {
			s, ok := f.resolve(src)
			if !ok {
				return nil, false
			}
			sm, isMap := s.(*ast.MappingNode)
			if !isMap {
				f.problem(mv.Value, "<< merges %s: give a mapping or a list of mappings", describeNode(s))
				return nil, false
			}
			es, ok := f.entries(sm, depth+1)
			if !ok {
				return nil, false
			}
			merged = append(merged, es...)
		}
	}
	seen := make(map[string]bool, len(own))
	for _, e := range own {
		seen[e.key] = true
	}
	for _, e := range merged {
		if !seen[e.key] {
			seen[e.key] = true
			own = append(own, e)
		}
	}
	return own, true
}

// keyText is the text of a mapping key.
func (f *limitsFile) keyText(k ast.Node) string {
	if mk, ok := k.(*ast.MappingKeyNode); ok {
		k = mk.Value
	}
	if v, ok := f.resolve(k); ok && v != nil {
		k = v
	}
	switch s := k.(type) {
	case *ast.StringNode:
		return s.Value
	case nil:
		return ""
	}
	if tok := k.GetToken(); tok != nil {
		return tok.Value
	}
	return k.String()
}

// collectAnchors records, in document order, the node each alias under n
// stands for: the value of the last anchor of its name before it.
func (f *limitsFile) collectAnchors(n ast.Node, anchors map[string]ast.Node) {
	switch v := n.(type) {
	case *ast.AnchorNode:
		f.collectAnchors(v.Value, anchors)
		if v.Name != nil {
			anchors[v.Name.GetToken().Value] = v.Value
		}
	case *ast.AliasNode:
		if v.Value != nil {
			if target, ok := anchors[v.Value.GetToken().Value]; ok {
				f.aliases[v] = target
			}
		}
	case *ast.MappingNode:
		for _, mv := range v.Values {
			f.collectAnchors(mv, anchors)
		}
	case *ast.MappingValueNode:
		f.collectAnchors(v.Key, anchors)
		f.collectAnchors(v.Value, anchors)
	case *ast.MappingKeyNode:
		f.collectAnchors(v.Value, anchors)
	case *ast.SequenceNode:
		for _, item := range v.Values {
			f.collectAnchors(item, anchors)
		}
	case *ast.TagNode:
		f.collectAnchors(v.Value, anchors)
	}
}

// resolve follows anchors, tags and aliases to the node n stands for; it
// records a problem and returns false for an alias without an anchor.
func (f *limitsFile) resolve(n ast.Node) (ast.Node, bool) {
	for range maxAliasDepth {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			target, ok := f.aliases[v]
			if !ok {
				f.problem(v, "alias %s names no anchor before it", v.String())
				return nil, false
			}
			n = target
		default:
			return n, true
		}
	}
	f.problem(n, "aliases nest deeper than %d", maxAliasDepth)
	return nil, false
}

// problem records a problem at node n.
func (f *limitsFile) problem(n ast.Node, format string, args ...any) {
	f.problemAt(tokenOf(n), format, args...)
}

// problemAt records a problem at tok: "file:line:column: message".
func (f *limitsFile) problemAt(tok *token.Token, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if tok == nil {
		f.problems = append(f.problems, f.name+": "+msg)
		return
	}
	f.problems = append(f.problems, fmt.Sprintf("%s:%d:%d: %s", f.name, tok.Position.Line, tok.Position.Column, msg))
}

// tokenOf is the token where n starts: a block mapping's first key.
func tokenOf(n ast.Node) *token.Token {
	switch v := n.(type) {
	case nil:
		return nil
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 {
			return tokenOf(v.Values[0].Key)
		}
	case *ast.MappingValueNode:
		return tokenOf(v.Key)
	case *ast.MappingKeyNode:
		return v.Start
	case *ast.AnchorNode:
		return v.Start
	case *ast.AliasNode:
		return v.Start
	case *ast.TagNode:
		return v.Start
	}
	return n.GetToken()
}

// describeNode names the kind of a YAML value for messages, with a scalar's text.
func describeNode(n ast.Node) string {
	switch v := n.(type) {
	case nil, *ast.NullNode:
		return "null (no value)"
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		return fmt.Sprintf("the string %q", v.Value)
	case *ast.LiteralNode:
		return fmt.Sprintf("the string %q", v.Value.Value)
	case *ast.BoolNode:
		return strconv.FormatBool(v.Value)
	}
	if tok := n.GetToken(); tok != nil {
		return tok.Value
	}
	return n.String()
}
