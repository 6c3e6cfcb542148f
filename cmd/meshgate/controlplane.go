package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
)

func newControlplaneCmd(g *globalFlags) *cobra.Command {
	opts := controlplane.Options{}
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve policy files to gateways and sidecars over xDS",
		Long: `Run the control plane: load the policy files, serve them over xDS (ADS) to
gateway and sidecar proxies, reload on every change (an invalid change is
rejected and the previous configuration kept), and answer the admin API
(/healthz, /status, /config_dump?node=ID, /tokens, /ca).

xDS and the certificate authority are served over TLS on --xds-address. The
CA root is generated on first start into --data-dir (or given with --ca-cert
and --ca-key); the admin API token is written to <data-dir>/admin-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(opts.ConfigPaths) == 0 {
				return &exitError{code: 2, err: errors.New("--config is required")}
			}
			opts.Logger = g.logger()
			return controlplane.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.ConfigPaths, "config", nil, "policy file or directory (repeatable, required)")
	f.StringVar(&opts.XDSAddress, "xds-address", controlplane.DefaultXDSAddress, "address to serve xDS (gRPC) on")
	f.StringVar(&opts.AdminAddress, "admin-address", controlplane.DefaultAdminAddress, "address to serve the admin HTTP API on")
	f.StringVar(&opts.DataDir, "data-dir", controlplane.DefaultDataDir(), "directory of the control plane's state: CA roots, join tokens, admin token")
	f.StringVar(&opts.CACertFile, "ca-cert", "", "PEM signing CA certificate (instead of a generated root); more certificates after the first are trusted too")
	f.StringVar(&opts.CAKeyFile, "ca-key", "", "PEM private key of --ca-cert")
	f.DurationVar(&opts.Debounce, "debounce", controlplane.DefaultDebounce, "quiet time after a file change before reloading")
	return cmd
}
