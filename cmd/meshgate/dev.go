package main

import "github.com/spf13/cobra"

// TODO: placeholder; replaced by the real command.
func newDevCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{Use: "dev", Short: "not yet implemented"}
}
