package main

import (
	"bufio"
	"fmt"
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
		Args:  exactName,
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
					return fmt.Errorf("%w: limit %s was not deleted", errAborted, name)
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
func (a *app) stdinIsTerminal() bool {
	f, ok := a.stdin.(*os.File)
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
