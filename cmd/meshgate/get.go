package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/meshgate/meshgate/controlplane/kvpolicy"
)

// newGetCmd builds `meshgate get`.
func newGetCmd() *cobra.Command {
	var store policyStoreFlags
	var namespace, output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME] --store consul",
		Short: "Show policy resources kept in Consul KV",
		Long: `Get lists the resources of KIND (Gateway, HTTPRoute, Service, SecurityPolicy,
MeshConfig; any case, plural or short name such as svc) kept in Consul KV, or
shows one by NAME. "all" lists every kind. -o yaml prints the documents as
stored, -o json the same as JSON; the default is a table.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "table", "yaml", "json":
			default:
				return &exitError{code: 2, err: fmt.Errorf("get: unknown -o %q (want yaml or json)", output)}
			}
			kind := args[0]
			if kind == "all" {
				if len(args) == 2 {
					return &exitError{code: 2, err: fmt.Errorf("get all: give a kind to get one resource by name")}
				}
				kind = ""
			} else if _, err := kvpolicy.CanonicalKind(kind); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("get: %w", err)}
			}
			s, addr, err := store.consulPolicyStore("get", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), kvCommandTimeout)
			defer cancel()
			var resources []kvpolicy.Resource
			if len(args) == 2 {
				r, err := s.Get(ctx, kind, namespace, args[1])
				if err != nil {
					return kvError("get", addr, err)
				}
				resources = []kvpolicy.Resource{r}
			} else {
				if resources, err = s.List(ctx, kind); err != nil {
					return kvError("get", addr, err)
				}
			}
			return printResources(cmd.OutOrStdout(), resources, output, len(args) == 2)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of NAME")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json (default: a table)")
	store.register(cmd)
	return cmd
}

// printResources writes resources as a table, YAML documents or JSON (one
// object for one resource by name, else {"items": [...]}).
func printResources(w io.Writer, resources []kvpolicy.Resource, output string, one bool) error {
	switch output {
	case "yaml":
		for i, r := range resources {
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			fmt.Fprintf(w, "# %s\n", r.Key)
			if _, err := w.Write(r.Data); err != nil {
				return err
			}
		}
		return nil
	case "json":
		items := make([]any, 0, len(resources))
		for _, r := range resources {
			var doc any
			if err := yaml.Unmarshal(r.Data, &doc); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("get: %s does not parse as YAML: %w", r.Key, err)}
			}
			items = append(items, doc)
		}
		var v any = map[string]any{"items": items}
		if one && len(items) == 1 {
			v = items[0]
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("get: %w", err)}
		}
		return nil
	default:
		if len(resources) == 0 {
			fmt.Fprintln(w, "No resources found.")
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tMODIFY-INDEX")
		for _, r := range resources {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.Kind, r.Namespace, r.Name, r.ModifyIndex)
		}
		return tw.Flush()
	}
}
