package main

import (
	"os"
	"strconv"

	"github.com/spf13/cobra"
)

// strictEnv is the environment variable that makes run and rate strict.
const strictEnv = "SLOTCTL_STRICT"

// strictMode is --strict when it was given, else $SLOTCTL_STRICT: 1 (or
// true) makes run and rate strict, 0, false or empty does not, anything
// else is a usage error.
func strictMode(cmd *cobra.Command, flag bool) (bool, error) {
	if cmd.Flags().Changed("strict") {
		return flag, nil
	}
	v := os.Getenv(strictEnv)
	if v == "" {
		return false, nil
	}
	strict, err := strconv.ParseBool(v)
	if err != nil {
		return false, usageError("%s=%q: give 1 to make run and rate strict, or 0", strictEnv, v)
	}
	return strict, nil
}
