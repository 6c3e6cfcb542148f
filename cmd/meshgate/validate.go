package main

import "github.com/spf13/cobra"

// TODO: placeholder; replaced by the real command.
func newValidateCmd() *cobra.Command {
	return &cobra.Command{Use: "validate", Short: "not yet implemented"}
}
