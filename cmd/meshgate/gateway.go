package main

import "github.com/spf13/cobra"

// TODO: placeholder; replaced by the real command.
func newGatewayCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{Use: "gateway", Short: "not yet implemented"}
}
