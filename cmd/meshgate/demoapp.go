package main

import (
	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/examples/demoapp"
)

func newDemoAppCmd(g *globalFlags) *cobra.Command {
	opts := demoapp.Options{}
	cmd := &cobra.Command{
		Use:    "demo-app",
		Short:  "Run the small demo HTTP service used by the quickstart and tests",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Logger = g.logger()
			return demoapp.Serve(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Name, "name", "demo", "service name to report")
	cmd.Flags().StringVar(&opts.Version, "version", "", "version to report")
	cmd.Flags().StringVar(&opts.Listen, "listen", "127.0.0.1:8081", "address to serve on")
	cmd.Flags().StringVar(&opts.Outbound, "outbound", "", "sidecar outbound address for /call/<service>/...")
	return cmd
}
