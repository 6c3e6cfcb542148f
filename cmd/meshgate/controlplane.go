package main

import "github.com/spf13/cobra"

// TODO: placeholder; replaced by the real command.
func newControlplaneCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{Use: "controlplane", Short: "not yet implemented"}
}
