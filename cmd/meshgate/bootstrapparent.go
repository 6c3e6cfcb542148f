package main

import "github.com/spf13/cobra"

// newBootstrapCmd is the parent of the commands that write the bootstrap
// of a client or proxy that is not meshgate's own (meshgate bootstrap
// envoy).
func newBootstrapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Enroll a proxy that is not meshgate's and write its bootstrap",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBootstrapEnvoyCmd())
	return cmd
}
