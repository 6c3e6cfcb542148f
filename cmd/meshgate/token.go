package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

func newTokenCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke join tokens (a proxy's first proof of identity)",
		Args:  cobra.NoArgs,
	}
	a.register(cmd)

	var service, namespace string
	var ttl time.Duration
	create := &cobra.Command{
		Use:     "create",
		Short:   "Create a join token bound to a service; prints only the token",
		Example: `  meshgate sidecar --service orders --token "$(meshgate token create --service orders)" ...`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if service == "" {
				return &exitError{code: 2, err: fmt.Errorf("--service is required")}
			}
			var resp controlplane.CreateTokenResponse
			req := controlplane.CreateTokenRequest{Service: service, Namespace: namespace, TTL: ttl.String()}
			if err := a.call(cmd.Context(), "POST", "/tokens", req, &resp); err != nil {
				return err
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), resp.Token)
			return err
		},
	}
	create.Flags().StringVar(&service, "service", "", "service (or gateway) name the token enrols (required)")
	create.Flags().StringVar(&namespace, "namespace", "default", "namespace of the service")
	create.Flags().DurationVar(&ttl, "ttl", tokens.DefaultTTL, "how long the token can be used")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp struct {
				Tokens []tokens.Record `json:"tokens"`
			}
			if err := a.call(cmd.Context(), "GET", "/tokens", nil, &resp); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSERVICE\tNAMESPACE\tEXPIRES\tREVOKED")
			for _, t := range resp.Tokens {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\n", t.ID, t.Service, t.Namespace, formatTime(t.ExpiresAt), t.Revoked)
			}
			return w.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token by its id, and every proxy enrolled with it",
		Long: `Revoke a join token by its id: it no longer enrols proxies, and the proxies
that enrolled with it are revoked too: their certificate renewals are refused and
their xDS streams closed at once; each keeps its certificate until it expires, and
its peers close its connections then (within one certificateTTL).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rec controlplane.RevokedToken
			if err := a.call(cmd.Context(), "DELETE", "/tokens/"+args[0], nil, &rec); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (%s/%s); closed %d connection(s) of its proxies on this control plane\n",
				rec.ID, rec.Namespace, rec.Service, rec.ClosedConnections)
			return err
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
