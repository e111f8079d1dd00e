package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// forwarded are the signals run passes to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// runFlags are the flags of run.
type runFlags struct {
	occupy   int
	timeout  time.Duration
	strict   bool
	try      bool
	ttl      time.Duration
	holder   string
	key      string
	keyed    bool
	priority int
}

func (a *app) runCmd() *cobra.Command {
	var rf runFlags
	cmd := &cobra.Command{
		Use:   "run NAME[,NAME...] [flags] -- COMMAND [ARGS...]",
		Short: "Run a command while holding slots on one or more limits",
		Long: `run acquires --occupy slots on every named limit, all or nothing, runs COMMAND
with standard input, output and error passed through, and releases the slots
when it ends. SIGINT, SIGTERM and SIGHUP are passed to the command. slotctl
exits with the command's status (128+signal when a signal killed it). If the
lease is lost while the command runs, the command is sent SIGTERM.

Put -- before COMMAND when it has flags of its own, or slotctl takes them for
run's. --timeout gives up waiting after a while, --try does not wait at all:
both exit 75 without running COMMAND.

A limit that does not exist or is inactive is not enforced: run warns and
runs COMMAND unlimited. --strict, or SLOTCTL_STRICT=1 in the environment,
makes that an error instead (exit 65); --strict=false overrides the variable.`,
		Example: `  slotctl run db -- ./migrate.sh                             # hold one slot of db while it runs
  slotctl run db -- sh -c 'pg_dump app | gzip > app.gz'      # a pipeline: give it to a shell
  slotctl run db,api --occupy 2 --timeout 5m -- make load    # 2 slots on each, all or nothing
  slotctl run db --try -- ./cron-job || echo "busy: $?"      # never wait: 75 when no slot is free
  SLOTCTL_STRICT=1 slotctl run db -- ./job                   # fail when db is missing or inactive
  slotctl run tenant --key acme -- ./job                     # a slot of key acme of the per-key limit tenant
  slotctl run db --priority 9 -- ./urgent                    # served before the waiters of lower priority`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case dash == 0 || len(args) == 0:
				return usageError("run: missing limit names: slotctl run NAME[,NAME...] -- COMMAND [ARGS...]")
			case dash > 1:
				return usageError("run: give the limit names as one argument NAME[,NAME...] before --, not %q", args[:dash])
			case len(args) < 2:
				return usageError("run: missing command: slotctl run %s -- COMMAND [ARGS...]", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if rf.occupy <= 0 {
				return usageError("run: --occupy must be at least 1, not %d", rf.occupy)
			}
			if rf.timeout < 0 {
				return usageError("run: --timeout must not be negative, not %v (0: wait forever)", rf.timeout)
			}
			if rf.try && cmd.Flags().Changed("timeout") {
				return usageError("run: give --try or --timeout, not both: --try never waits")
			}
			if rf.ttl < 0 {
				return usageError("run: --lease-ttl must not be negative, not %v (0: the broker's default)", rf.ttl)
			}
			if err := checkKeyPriority("run", args[0], cmd, rf.key, rf.priority); err != nil {
				return err
			}
			rf.keyed = cmd.Flags().Changed("key")
			var err error
			if rf.strict, err = strictMode(cmd, rf.strict); err != nil {
				return err
			}
			return a.run(strings.Split(args[0], ","), args[1:], rf)
		},
	}
	cmd.SetFlagErrorFunc(runFlagError)
	f := cmd.Flags()
	f.IntVar(&rf.occupy, "occupy", 1, "slots to hold on each limit")
	f.DurationVar(&rf.timeout, "timeout", 0, "give up waiting after this long, with exit status 75 (0: wait forever)")
	f.BoolVar(&rf.strict, "strict", false, "fail (exit 65) when a limit is missing or inactive instead of running unlimited ("+strictEnv+"=1 in the environment sets it)")
	f.BoolVar(&rf.try, "try", false, "never wait: exit 75 at once when the slots are not free")
	f.DurationVar(&rf.ttl, "lease-ttl", 0, "lease time to live (0: the broker's default); the lease is renewed while the command runs")
	f.StringVar(&rf.holder, "holder", "", `holder description shown by inspect (default "slotctl run <command> on <host> pid <pid>")`)
	f.StringVar(&rf.key, "key", "", "the key to hold slots of, in a per-key limit (created with --per-key)")
	f.IntVar(&rf.priority, "priority", 0, "queue at this priority, 0 (lowest) to 9: higher is served first; waiting raises it")
	return cmd
}

// run acquires the slots, runs command and releases them.
func (a *app) run(names, command []string, rf runFlags) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	if rf.holder == "" {
		rf.holder = defaultHolder(command)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu  sync.Mutex
		ch  *child
		got os.Signal
	)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case s := <-sigs:
				mu.Lock()
				if ch != nil {
					ch.signal(s)
				} else if got == nil {
					got = s
					cancel()
				}
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()

	opts := []client.AcquireOption{client.WithHolder(rf.holder)}
	if len(names) > 1 {
		opts = append(opts, client.WithNames(names[1:]...))
	}
	if rf.timeout > 0 {
		opts = append(opts, client.WithTimeout(rf.timeout))
	}
	if rf.strict {
		opts = append(opts, client.WithStrict())
	}
	if rf.ttl > 0 {
		opts = append(opts, client.WithLeaseTTL(rf.ttl))
	}
	if rf.keyed {
		opts = append(opts, client.WithKey(rf.key))
	}
	if rf.priority != 0 {
		opts = append(opts, client.WithPriority(rf.priority))
	}
	var lease *client.Lease
	if rf.try {
		lease, err = cl.TryAcquire(ctx, names[0], rf.occupy, opts...)
	} else {
		ex := newWaitExplainer()
		ex.key, ex.keyed = rf.key, rf.keyed
		go ex.run(ctx, cl, names[0], rf.occupy, a.timeout, a.stderr)
		lease, err = cl.Acquire(ctx, names[0], rf.occupy, append(opts, client.WithQueueUpdates(ex.onQueued))...)
		ex.done()
	}
	if err != nil {
		mu.Lock()
		s := got
		mu.Unlock()
		switch {
		case s != nil:
			return interrupted(s, names)
		case rf.try && errors.Is(err, client.ErrNoSlots):
			return noSlotFree(err, slotsOn(rf.occupy, names))
		case rf.timeout > 0 && errors.Is(err, client.ErrTimeout):
			return timedOut(err, rf.timeout, slotsOn(rf.occupy, names))
		}
		return flagValueError(err)
	}

	mu.Lock()
	if got != nil {
		s := got
		mu.Unlock()
		a.release(lease, names)
		return interrupted(s, names)
	}
	c, err := startChild(command, a.stdin, a.stdout, a.stderr)
	if err != nil {
		mu.Unlock()
		a.release(lease, names)
		return err
	}
	ch = c
	mu.Unlock()

	select {
	case <-c.done:
	case <-lease.Done():
		if lerr := lease.Err(); lerr != nil {
			fmt.Fprintf(a.stderr, "slotctl: lease lost on %s while %s ran (%s): sending it SIGTERM\n",
				strings.Join(names, ","), displayText(command[0]), displayText(strings.TrimPrefix(lerr.Error(), "slotbroker: ")))
			c.signal(syscall.SIGTERM)
		}
		<-c.done
	}
	a.release(lease, names)
	return exitStatus{code: c.status()}
}

// release gives the lease back; a failure is a warning, as the lease expires anyway.
func (a *app) release(lease *client.Lease, names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout+retryFor)
	defer cancel()
	if err := lease.Release(ctx); err != nil {
		fmt.Fprintf(a.stderr, "slotctl: warning: could not release the lease on %s (%s); it will expire\n",
			strings.Join(names, ","), displayText(strings.TrimPrefix(err.Error(), "slotbroker: ")))
	}
}

// interrupted is the error of a wait ended by signal s: exit status 128+s.
func interrupted(s os.Signal, names []string) error {
	code := exitFailure
	if n, ok := s.(syscall.Signal); ok {
		code = 128 + int(n)
	}
	return &signalStatus{code: code, err: fmt.Errorf("%w by %v while waiting for slots on %s", errInterrupted, s, strings.Join(names, ","))}
}

// defaultHolder is "slotctl run <command> on <host> pid <pid>", the
// command's words quoted as a shell would need them (shellQuote) and cut to
// 60 characters, the whole within the broker's 256 bytes of printable text.
func defaultHolder(command []string) string {
	words := make([]string, len(command))
	for i, w := range command {
		words[i] = shellQuote(w)
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown host"
	}
	const prefix = "slotctl run "
	suffix := fmt.Sprintf(" on %s pid %d", displayText(host), os.Getpid())
	cmdline := cut(strings.Join(words, " "), 60, messages.MaxHolderLen-len(prefix)-len(suffix))
	return cut(prefix+cmdline+suffix, messages.MaxHolderLen, messages.MaxHolderLen)
}

// cut shortens s to at most maxRunes characters and maxBytes bytes, ending
// it with "…" when it cuts.
func cut(s string, maxRunes, maxBytes int) string {
	if utf8.RuneCountInString(s) <= maxRunes && len(s) <= maxBytes {
		return s
	}
	const ellipsis = "…"
	n := 0
	for runes := 1; runes < maxRunes; runes++ {
		_, size := utf8.DecodeRuneInString(s[n:])
		if size == 0 || n+size > maxBytes-len(ellipsis) {
			break
		}
		n += size
	}
	return s[:n] + ellipsis
}

// shellQuote quotes word as a POSIX shell would need it typed: as it is
// when it has only characters no shell treats specially, in single quotes
// when it has other printable ones, and in bash's $'...' with escapes
// (\n, \x01, \u202e) when it has characters that are not printable, so
// that the result is always printable text.
func shellQuote(word string) string {
	if word == "" {
		return "''"
	}
	plain, printable := true, true
	for _, r := range word {
		switch {
		case r == utf8.RuneError || !strconv.IsPrint(r):
			printable = false
		case r >= utf8.RuneSelf || !strings.ContainsRune(shellPlain, r):
			plain = false
		}
	}
	switch {
	case plain && printable:
		return word
	case printable:
		return "'" + strings.ReplaceAll(word, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(word); {
		r, size := utf8.DecodeRuneInString(word[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, word[i])
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < utf8.RuneSelf && !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == utf8.RuneError || !strconv.IsPrint(r):
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += size
	}
	b.WriteString("'")
	return b.String()
}

// shellPlain are the characters a word may have and need no quotes.
const shellPlain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_"
