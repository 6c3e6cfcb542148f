package main

import "github.com/spf13/cobra"

// TODO: placeholder; replaced by the real command.
func newSidecarCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{Use: "sidecar", Short: "not yet implemented"}
}
