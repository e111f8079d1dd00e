package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// child is the command run holds slots for.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's error, set before done closes
}

// startChild starts args with the given streams passed through.
func startChild(args []string, stdin io.Reader, stdout, stderr io.Writer) (*child, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = 127
		}
		return nil, &signalStatus{code: code, err: fmt.Errorf("cannot run %s: %v", args[0], err)}
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the child; a child that has exited is ignored.
func (c *child) signal(sig os.Signal) {
	_ = c.cmd.Process.Signal(sig)
}

// status is the child's exit status, 128+signal when a signal killed it. Call it after done.
func (c *child) status() int {
	ps := c.cmd.ProcessState
	if ps == nil {
		return exitFailure
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
