package main

import (
	"cmp"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/ca"
)

func newProxiesCmd() *cobra.Command {
	a := &adminFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "proxies",
		Short: "List the proxies connected to the control plane: identity, configuration versions, sync; revoke them",
		Long: `Proxies lists the proxies connected to the control plane (GET /status): node
id, role, the service or Gateway it serves, its address (a sidecar's inbound
listener, a gateway's xDS connection), its identity (SPIFFE ID and certificate
expiry), the version of each xDS type it accepted (LDS, RDS, CDS, EDS, SDS),
whether it is in sync (it accepted the version it is served of every type it
asks for; "held" when the control plane holds its configuration back), and
its last rejection of a configuration (NACK: type, version, error, time),
kept after later versions are accepted.

-o json and -o yaml print every field, with full versions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputFormat("proxies", output); err != nil {
				return err
			}
			var st controlplane.Status
			if err := a.call(cmd.Context(), "GET", "/status", nil, &st); err != nil {
				return err
			}
			views := make([]proxyView, len(st.Proxies))
			for i, p := range st.Proxies {
				views[i] = newProxyView(p)
			}
			if output == "json" || output == "yaml" {
				return writeStructured(cmd.OutOrStdout(), output, map[string]any{"proxies": views})
			}
			return printProxies(cmd.OutOrStdout(), views)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	a.register(cmd)
	cmd.AddCommand(newProxiesRevokeCmd(a), newProxiesRevocationsCmd(a), newProxiesEndpointsCmd(a))
	return cmd
}

func newProxiesRevokeCmd(a *adminFlags) *cobra.Command {
	var req controlplane.RevokeRequest
	cmd := &cobra.Command{
		Use:   "revoke (--identity SPIFFE-ID | --service NAME [--namespace NS] | --proxy NODE-ID | --enrolment ID)",
		Short: "Revoke an identity or one proxy: its certificates are no longer renewed and its xDS streams are closed",
		Long: `Revoke an identity or one proxy, without rotating the root.

--identity (or --service/--namespace) revokes every certificate of that SPIFFE ID
issued until now and every join token for it created until now; a token created
afterwards enrols the service again. --proxy revokes the enrolment (the certificate
lineage) of the proxy connected with that node id; --enrolment does the same by the
id 'meshgate proxies' shows. (To revoke every proxy enrolled with a join token, use
'meshgate token revoke ID'.)

A revoked proxy's renewals are refused and its xDS streams closed (and refused on
reconnect) at once; it keeps its certificate until it expires, and its peers close
its connections then: within one certificateTTL.`,
		Example: `  meshgate proxies revoke --service orders
  meshgate proxies revoke --identity spiffe://meshgate.local/ns/default/svc/orders
  meshgate proxies revoke --proxy 'sidecar~orders~10.0.0.7:21011'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set := 0
			for _, v := range []string{req.Identity, req.Service, req.Proxy, req.Enrolment} {
				if v != "" {
					set++
				}
			}
			if set != 1 {
				return &exitError{code: 2, err: fmt.Errorf("give exactly one of --identity, --service, --proxy or --enrolment")}
			}
			if req.Namespace != "" && req.Service == "" {
				return &exitError{code: 2, err: fmt.Errorf("--namespace goes with --service")}
			}
			var resp controlplane.RevokeResponse
			if err := a.call(cmd.Context(), "POST", "/revocations", req, &resp); err != nil {
				return err
			}
			rev := resp.Revocation
			if rev == nil {
				return fmt.Errorf("the control plane answered without a revocation")
			}
			out := cmd.OutOrStdout()
			switch rev.Kind {
			case ca.RevokedIdentity:
				fmt.Fprintf(out, "revoked identity %s (certificates and join tokens from before %s)\n", rev.SPIFFEID, formatTime(rev.RevokedAt))
			default:
				fmt.Fprintf(out, "revoked enrolment %s", rev.Enrolment)
				if rev.Node != "" {
					fmt.Fprintf(out, " of proxy %s (%s)", rev.Node, rev.SPIFFEID)
				}
				fmt.Fprintln(out)
			}
			_, err := fmt.Fprintf(out, "closed %d connection(s) of revoked proxies on this control plane\n", resp.ClosedConnections)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Identity, "identity", "", "SPIFFE ID to revoke (spiffe://<trust-domain>/ns/<namespace>/svc/<service>)")
	f.StringVar(&req.Service, "service", "", "service (or gateway) whose identity to revoke, in the mesh's trust domain")
	f.StringVar(&req.Namespace, "namespace", "", "namespace of --service (default \"default\")")
	f.StringVar(&req.Proxy, "proxy", "", "node id of a connected proxy whose enrolment to revoke")
	f.StringVar(&req.Enrolment, "enrolment", "", "enrolment id to revoke (16 hex digits, from 'meshgate proxies')")
	return cmd
}

func newProxiesRevocationsCmd(a *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revocations",
		Short: "List revoked identities and enrolments (revoked join tokens: 'meshgate token list')",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp struct {
				Revocations []ca.Revocation `json:"revocations"`
			}
			if err := a.call(cmd.Context(), "GET", "/revocations", nil, &resp); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "KIND\tIDENTITY\tENROLMENT\tPROXY\tREVOKED")
			for _, r := range resp.Revocations {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Kind, cmp.Or(r.SPIFFEID, "-"), cmp.Or(r.Enrolment, "-"),
					cmp.Or(r.Node, "-"), formatTime(r.RevokedAt))
			}
			return w.Flush()
		},
	}
}
