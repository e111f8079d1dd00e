package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
)

// forwarded are the signals run passes to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// runFlags are the flags of run.
type runFlags struct {
	occupy  int
	timeout time.Duration
	strict  bool
	ttl     time.Duration
	holder  string
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
lease is lost while the command runs, the command is sent SIGTERM.`,
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
			if rf.timeout < 0 || rf.ttl < 0 {
				return usageError("run: --timeout and --lease-ttl must not be negative")
			}
			return a.run(strings.Split(args[0], ","), args[1:], rf)
		},
	}
	f := cmd.Flags()
	f.IntVar(&rf.occupy, "occupy", 1, "slots to hold on each limit")
	f.DurationVar(&rf.timeout, "timeout", 0, "give up waiting after this long, with exit status 75 (0: wait forever)")
	f.BoolVar(&rf.strict, "strict", false, "fail when a limit is missing or inactive instead of running unlimited")
	f.DurationVar(&rf.ttl, "lease-ttl", 0, "lease time to live (0: the broker's default); the lease is renewed while the command runs")
	f.StringVar(&rf.holder, "holder", "", `holder description shown by inspect (default "slotctl run <command> on <host> pid <pid>")`)
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

	ex := newWaitExplainer()
	go ex.run(ctx, cl, names[0], rf.occupy, a.timeout, a.stderr)
	opts := []client.AcquireOption{client.WithQueued(ex.onQueued), client.WithHolder(rf.holder)}
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
	lease, err := cl.Acquire(ctx, names[0], rf.occupy, opts...)
	ex.done()
	if err != nil {
		mu.Lock()
		s := got
		mu.Unlock()
		if s != nil {
			return interrupted(s, names)
		}
		if rf.timeout > 0 && errors.Is(err, client.ErrTimeout) {
			return fmt.Errorf("%w on %s within --timeout %v", err, strings.Join(names, ","), rf.timeout)
		}
		return err
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

// defaultHolder is "slotctl run <command> on <host> pid <pid>".
func defaultHolder(command []string) string {
	cmdline := strings.Join(command, " ")
	if r := []rune(cmdline); len(r) > 60 {
		cmdline = string(r[:59]) + "…"
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown host"
	}
	return fmt.Sprintf("slotctl run %s on %s pid %d", cmdline, host, os.Getpid())
}
