package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/kvpolicy"
	"github.com/meshgate/meshgate/policy"
)

// newGetCmd builds `meshgate get`.
func newGetCmd() *cobra.Command {
	var store policyStoreFlags
	admin := &adminFlags{}
	var namespace, output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show policy resources with their status, or those kept in Consul KV",
		Long: `Get lists the resources of KIND (Gateway, HTTPRoute, GRPCRoute, Service, SecurityPolicy,
TrafficPolicy, MeshConfig, ListenerSet...; any case, plural or short name such as svc), or shows one by NAME.
"all" lists every kind. "consumers" lists the consumers the SecurityPolicies
declare (API key consumers, basic-auth users, JWT consumers: the names of
the per-consumer metrics), with their kind and policy.

By default (--store file) it asks the control plane's admin API (--admin,
--admin-token as for status) and shows each resource of the policy it
serves as Kubernetes would: -o yaml or -o json print the resource as written
now with its status: block (Gateway API conditions: Accepted, ResolvedRefs,
Programmed; per listener of a Gateway, per parent of a route); the table's
STATUS column says Accepted, Rejected: <reason>, LastGood: <reason> (the
resource is invalid, its last good version serves) or FailClosed: <reason>
(an invalid SecurityPolicy: its targets deny every request).

With --store consul it lists the resources kept in Consul KV: -o yaml prints
the documents as stored, -o json the same as JSON; the default is a table,
with a STATUS column when the control plane's admin API answers.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "", "table", "yaml", "json":
			default:
				return &exitError{code: 2, err: fmt.Errorf("get: unknown -o %q (want yaml or json)", output)}
			}
			kind := args[0]
			if isConsumersKind(kind) && store.store == policyStoreFile {
				name := ""
				if len(args) == 2 {
					name = args[1]
				}
				return getConsumers(cmd.Context(), cmd.OutOrStdout(), admin, namespace, name, output)
			}
			if kind == "all" {
				if len(args) == 2 {
					return &exitError{code: 2, err: fmt.Errorf("get all: give a kind to get one resource by name")}
				}
				kind = ""
			} else if _, err := kvpolicy.CanonicalKind(kind); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("get: %w", err)}
			}
			if store.store == policyStoreFile {
				name := ""
				if len(args) == 2 {
					name = args[1]
				}
				return getFromControlPlane(cmd.Context(), cmd.OutOrStdout(), admin, kind, namespace, name, output)
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
			return printResources(cmd.OutOrStdout(), resources, output, len(args) == 2, controlPlaneStates(cmd.Context(), admin, kind))
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "namespace of NAME")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml or json (default: a table)")
	store.register(cmd)
	admin.register(cmd)
	return cmd
}

// getFromControlPlane shows the resources of kind ("" for every kind), or
// the one named, of the policy the control plane serves, with their status.
func getFromControlPlane(ctx context.Context, w io.Writer, admin *adminFlags, kind, namespace, name, output string) error {
	var items []policy.ResourceStatus
	if name != "" {
		var one policy.ResourceStatus
		if err := admin.call(ctx, "GET", "/resources/"+url.PathEscape(kind)+"/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, &one); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("get: %w", err)}
		}
		items = []policy.ResourceStatus{one}
	} else {
		var list controlplane.Resources
		if err := admin.call(ctx, "GET", "/resources?kind="+url.QueryEscape(kind), nil, &list); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("get: %w", err)}
		}
		items = list.Items
	}
	return printResourceStatuses(w, items, output, name != "")
}

// printResourceStatuses writes resources with their status as a table,
// YAML documents (each preceded by a comment naming its file and line) or
// JSON (one object for one resource by name, else {"items": [...]}).
func printResourceStatuses(w io.Writer, items []policy.ResourceStatus, output string, one bool) error {
	switch output {
	case "yaml":
		for i, r := range items {
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			doc, err := toYAML(r.Object)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("get: %w", err)}
			}
			fmt.Fprintf(w, "# %s:%d (%s)\n%s", r.File, r.Line, resourceState(r), doc)
		}
		return nil
	case "json":
		objects := make([]any, len(items))
		for i, r := range items {
			objects[i] = r.Object
		}
		return writeJSONItems(w, objects, one)
	default:
		if len(items) == 0 {
			fmt.Fprintln(w, "No resources found.")
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tSTATUS\tFILE")
		for _, r := range items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s:%d\n", r.Kind, r.Namespace, r.Name, resourceState(r), r.File, r.Line)
		}
		return tw.Flush()
	}
}

// controlPlaneStates asks the control plane (best effort: nil when it
// cannot be reached within a second) for the STATUS of every resource of
// kind ("" for all), by stateKey.
func controlPlaneStates(ctx context.Context, admin *adminFlags, kind string) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var list controlplane.Resources
	if err := admin.call(ctx, "GET", "/resources?kind="+url.QueryEscape(kind), nil, &list); err != nil {
		return nil
	}
	out := make(map[string]string, len(list.Items))
	for _, r := range list.Items {
		out[stateKey(r.Kind, r.Namespace, r.Name)] = resourceState(r)
	}
	return out
}

// stateKey identifies a resource in controlPlaneStates: a cluster-scoped
// kind's namespace is ignored (KV keeps it under "default").
func stateKey(kind, namespace, name string) string {
	if policy.ClusterScoped(kind) {
		namespace = ""
	}
	return kind + "/" + namespace + "/" + name
}

// resourceState is a resource's STATUS column: Accepted, Accepted
// (<reason>) when a reference or parent of it does not resolve, or the
// state and its reason.
func resourceState(r policy.ResourceStatus) string {
	switch {
	case r.Reason == "":
		return r.State
	case r.State == policy.StateAccepted:
		return r.State + " (" + r.Reason + ")"
	default:
		return r.State + ": " + r.Reason
	}
}

// toYAML writes v as YAML, through its JSON form (the field names and
// omissions of its JSON tags, as kubectl shows objects).
func toYAML(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return nil, err
	}
	return yaml.Marshal(generic)
}

// printResources writes resources as a table, YAML documents or JSON (one
// object for one resource by name, else {"items": [...]}).
func printResources(w io.Writer, resources []kvpolicy.Resource, output string, one bool, states map[string]string) error {
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
		return writeJSONItems(w, items, one)
	default:
		if len(resources) == 0 {
			fmt.Fprintln(w, "No resources found.")
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		if states == nil {
			fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tMODIFY-INDEX")
			for _, r := range resources {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.Kind, r.Namespace, r.Name, r.ModifyIndex)
			}
			return tw.Flush()
		}
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tMODIFY-INDEX\tSTATUS")
		for _, r := range resources {
			state := states[stateKey(r.Kind, r.Namespace, r.Name)]
			if state == "" {
				state = "-" // not in the policy the control plane serves (yet)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.Kind, r.Namespace, r.Name, r.ModifyIndex, state)
		}
		return tw.Flush()
	}
}

// writeJSONItems writes items as {"items": [...]}, or the one item alone
// when one resource was asked for by name.
func writeJSONItems(w io.Writer, items []any, one bool) error {
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
}
