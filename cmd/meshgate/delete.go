package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane/kvpolicy"
)

// newDeleteCmd builds `meshgate delete`.
func newDeleteCmd() *cobra.Command {
	var store policyStoreFlags
	var namespace string
	cmd := &cobra.Command{
		Use:   "delete KIND NAME --store consul",
		Short: "Delete a policy resource from Consul KV",
		Long: `Delete removes one resource from Consul KV, after checking that the policy
left is valid with the services of the Consul catalog (a Service a route still
sends traffic to cannot go before the route), in a transaction that fails if
the policy changed meanwhile.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := kvpolicy.CanonicalKind(args[0])
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("delete: %w", err)}
			}
			s, addr, err := store.consulPolicyStore("delete", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), kvCommandTimeout)
			defer cancel()
			if err := s.Delete(ctx, kind, namespace, args[1]); err != nil {
				return kvError("delete", addr, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s/%s deleted\n", strings.ToLower(kind), namespace, args[1])
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of NAME")
	store.register(cmd)
	return cmd
}
