package main

import (
	"cmp"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
)

func newProxiesCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "proxies",
		Short: "List the proxies connected to the control plane, with their identity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st controlplane.Status
			if err := a.call(cmd.Context(), "GET", "/status", nil, &st); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tROLE\tNAME\tIDENTITY\tCERT-EXPIRES\tMTLS\tHELD")
			for _, p := range st.Proxies {
				fmt.Fprintf(w, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", p.ID, p.Role, p.Namespace, p.Name,
					cmp.Or(p.SPIFFEID, "-"), formatTime(p.CertNotAfter), cmp.Or(p.MTLSMode, "-"), cmp.Or(p.Held, "-"))
			}
			return w.Flush()
		},
	}
	a.register(cmd)
	return cmd
}
