package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// retryFor is how long acquire, renew and release requests are retried while
// no broker answers: short, so an absent broker fails fast.
const retryFor = 2 * time.Second

// app is one invocation of slotctl: its streams, global flags and connection.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	server      string
	prefix      string
	creds       string
	user        string
	password    string
	inboxPrefix string
	timeout     time.Duration

	// started is set once a command's flags and arguments were accepted;
	// an error before that is a usage error.
	started bool

	nc *nats.Conn
	cl *client.Client
	// warn prints warnings, the client's and the connection's, one per line.
	warn *slog.Logger
}

// execute runs slotctl with args and returns its exit status.
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	defer a.close()
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err != nil && !a.started && !errors.Is(err, errUsage) {
		path := "slotctl"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		err = &msgError{msg: fmt.Sprintf("%v (see '%s --help')", err, path), kind: errUsage}
	}
	if line := errorLine(err); line != "" {
		fmt.Fprintln(stderr, line)
	}
	return exitCode(err)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "slotctl",
		Short: "Manage slotbroker concurrency and rate limits",
		Long: `slotctl manages the concurrency and rate limits brokered by slotbroker over NATS.

A NATS user whose permissions allow only some subjects needs publish
permission on the request subjects it uses ("<prefix>.v1.<verb>.<name>",
"<prefix>.v1.<verb>.<name>.<key>" with --key on a per-key limit,
"<prefix>.v1.acquire-many.<name>.<name>..." for run or rate on several
limits) and subscribe permission on its inboxes: give --inbox-prefix when
that is not "_INBOX.>".

Exit status: 0 success (also a delete declined at its prompt: nothing is
deleted); the command's status for run; 64 usage error (unknown command or
flag, missing argument, invalid flag value, whether slotctl or the broker
refuses it: --limit 0, a --lease-ttl outside the broker's bounds); 65 invalid
input (bad name, occupy above the limit, limit exists or not found, not a rate
limit, a limit missing or inactive under --strict); 69 broker or NATS server
unreachable; 75 timed out waiting (--timeout), no slot free with --try, or too
many waiters; 77 permission denied (by the NATS server or the broker).

Environment: NATS_URL (the server when --server is not given);
SLOTCTL_STRICT=1 makes run and rate strict, as --strict does.

Shell completion: slotctl completion bash|zsh|fish|powershell prints the
script (see 'slotctl completion --help').`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          rootArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError("missing command: use one of create, inspect, ls, update, enable, disable, delete, apply, run, rate, watch, status, top, revoke (see 'slotctl --help')")
		},
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if a.timeout <= 0 {
				return usageError("--request-timeout must be positive, not %v", a.timeout)
			}
			if a.inboxPrefix != "" && !validInboxPrefix(a.inboxPrefix) {
				return usageError("--inbox-prefix %q is not a subject prefix: give literal tokens separated by '.', without wildcards, spaces or a trailing '.' (e.g. _INBOX.alice)", a.inboxPrefix)
			}
			return nil
		},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(flagError)
	root.Version, root.SuggestionsMinimumDistance = version, 2
	root.SetVersionTemplate("slotctl {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVarP(&a.server, "server", "s", "", "NATS server URL (default $NATS_URL, else "+nats.DefaultURL+")")
	pf.StringVar(&a.prefix, "prefix", messages.DefaultPrefix, "subject prefix the broker serves under")
	pf.StringVar(&a.creds, "creds", "", "NATS credentials file")
	pf.StringVar(&a.user, "user", "", "NATS user")
	pf.StringVar(&a.password, "password", "", "NATS password")
	pf.StringVar(&a.inboxPrefix, "inbox-prefix", "", `subject prefix of the connection's inboxes, where replies and grants arrive (default "_INBOX"): give one whose "<prefix>.>" the NATS user may subscribe to`)
	pf.DurationVar(&a.timeout, "request-timeout", 5*time.Second, "timeout of one request to the broker (not the wait: see run and rate --timeout)")

	root.AddCommand(a.createCmd(), a.inspectCmd(), a.lsCmd(), a.updateCmd(), a.enableCmd(), a.disableCmd(),
		a.deleteCmd(), a.runCmd(), a.rateCmd(), a.watchCmd())
	root.AddCommand(a.statusCmd())
	root.AddCommand(a.applyCmd())
	root.AddCommand(a.topCmd())
	root.AddCommand(a.revokeCmd())
	for _, c := range root.Commands() {
		a.markStart(c)
	}
	return root
}

// markStart makes c's RunE record that cobra accepted the flags and
// arguments: errors before that are usage errors (cobra validates required
// flags and flag groups after the pre-run hooks).
func (a *app) markStart(c *cobra.Command) {
	run := c.RunE
	if run == nil {
		return
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		a.started = true
		return run(cmd, args)
	}
}

// serverURL is --server, else $NATS_URL, else the NATS default.
func (a *app) serverURL() string {
	if a.server != "" {
		return a.server
	}
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return nats.DefaultURL
}

// client connects to NATS and returns a slotbroker client.
func (a *app) client() (*client.Client, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	url := a.serverURL()
	opts := []nats.Option{
		nats.Name("slotctl"),
		nats.Timeout(a.timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
	if a.creds != "" {
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.user != "" || a.password != "" {
		opts = append(opts, nats.UserInfo(a.user, a.password))
	}
	if a.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.inboxPrefix))
	}
	a.warn = slog.New(newWarnHandler(a.stderr))
	opts = append(opts, nats.ErrorHandler(a.natsError))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", errUnreachable, url, err)
	}
	cl, err := client.New(nc, client.WithPrefix(a.prefix), client.WithRequestTimeout(a.timeout),
		client.WithRetryFor(retryFor), client.WithLogger(a.warn))
	if err != nil {
		nc.Close()
		if errors.Is(err, client.ErrPermissionDenied) {
			// The grant inbox: the client's advice is for Go code, slotctl has a flag.
			return nil, fmt.Errorf("%w (with slotctl: --inbox-prefix)", err)
		}
		return nil, err
	}
	a.nc, a.cl = nc, cl
	return cl, nil
}

// validInboxPrefix tells whether p can prefix inbox subjects: literal
// tokens of printable ASCII without wildcards, joined by single dots.
func validInboxPrefix(p string) bool {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*>") {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] >= 0x7f {
				return false
			}
		}
	}
	return true
}

// natsError prints the connection's asynchronous errors, but for the
// permissions violations the client turns into the command's error: a
// refused publish (the request fails with it) and a refused subscription
// to the connection's own inboxes (connecting fails with it).
func (a *app) natsError(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		msg := strings.ToLower(err.Error())
		inbox := nats.InboxPrefix // "_INBOX."
		if a.inboxPrefix != "" {
			inbox = a.inboxPrefix + "."
		}
		if strings.Contains(msg, "for publish to ") || strings.Contains(msg, `for subscription to "`+strings.ToLower(inbox)) {
			return
		}
	}
	a.warn.Warn(err.Error())
}

// requestContext bounds an admin request by --timeout.
func (a *app) requestContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, a.timeout)
}

// close closes the client and the connection, if any.
func (a *app) close() {
	if a.cl != nil {
		_ = a.cl.Close()
	}
	if a.nc != nil {
		_ = a.nc.FlushTimeout(time.Second)
		a.nc.Close()
	}
}

// exactName checks that a command got exactly one argument, the limit name.
func exactName(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageError("%s takes exactly one limit name, got %d arguments (see 'slotctl %s --help')", cmd.Name(), len(args), cmd.Name())
	}
	return nil
}
