package main

import "github.com/spf13/cobra"

func (a *app) disableCmd() *cobra.Command {
	return a.setActiveCmd("disable", "Stop enforcing a limit: acquisitions pass uncounted", false, "disabled",
		"  slotctl disable db    # run and rate on db pass at once (with a warning; --strict fails)")
}
