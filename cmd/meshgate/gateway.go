package main

import (
	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/gateway"
)

// defaultGatewayAdminAddress is where a gateway node serves /ready,
// /config_dump and /stats unless --admin says otherwise.
const defaultGatewayAdminAddress = "127.0.0.1:15100"

func newGatewayCmd(g *globalFlags) *cobra.Command {
	opts := gateway.Options{}
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway node: the proxy of one Gateway, configured over xDS",
		Long: `Run a gateway node for the Gateway --name: connect to the control plane(s)
over xDS (ADS), open the listeners of that Gateway and route external clients
to services. Admin endpoints: /ready, /config_dump, /stats.`,
		Example: `  meshgate gateway --name edge --xds 127.0.0.1:18000`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Logger = g.logger()
			proxy, err := gateway.New(opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			return proxy.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Name, "name", "", "name of the Gateway this node serves (required)")
	f.StringVar(&opts.Namespace, "namespace", gateway.DefaultNamespace, "namespace of the Gateway")
	f.StringSliceVar(&opts.XDSAddresses, "xds", nil, "control-plane xDS address host:port; several comma-separated or repeated (required)")
	f.StringVar(&opts.AdminAddress, "admin", defaultGatewayAdminAddress, "address of the admin HTTP endpoints")
	f.StringVar(&opts.ID, "id", "", "node id (default gateway~<name>~<hostname>-<pid>)")
	return cmd
}
