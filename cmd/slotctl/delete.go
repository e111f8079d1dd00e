package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func (a *app) deleteCmd() *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "delete NAME [--yes]",
		Short: "Delete a limit: its waiters fail and its leases are voided",
		Long: `delete deletes a limit: its waiters fail and its leases are voided (their
holders see the lease lost; run sends its command SIGTERM).

Without --yes, delete asks for confirmation on the terminal (standard input
must be one: a script gives --yes). Any answer but y or yes deletes nothing:
delete then prints "limit NAME was not deleted" and exits 0.`,
		Example: `  slotctl delete db           # asks "Delete limit db? [y/N]"
  slotctl delete db --yes     # in a script`,
		Args: exactName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				if !a.stdinIsTerminal() {
					return usageError("delete %s: standard input is not a terminal, so slotctl cannot ask for confirmation: use --yes", name)
				}
				ok, err := a.confirm(fmt.Sprintf("Delete limit %s? [y/N] ", name))
				if err != nil {
					return err
				}
				if !ok {
					fmt.Fprintf(a.stderr, "slotctl: limit %s was not deleted\n", displayText(name))
					return nil
				}
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			info, err := cl.DeleteLimit(ctx, name)
			if err != nil {
				return err
			}
			return printLimitResult(a.stdout, "deleted", info, asJSON)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the deleted limit as JSON")
	return cmd
}

// stdinIsTerminal reports whether standard input is a terminal.
func (a *app) stdinIsTerminal() bool { return isTerminal(a.stdin) }

// isTerminal reports whether r is a terminal (a variable for the tests).
var isTerminal = func(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// confirm asks question on stderr and reads the answer from stdin: true for y or yes.
func (a *app) confirm(question string) (bool, error) {
	fmt.Fprint(a.stderr, question)
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(a.stderr)
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
