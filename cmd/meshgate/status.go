package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/policy"
)

func newStatusCmd() *cobra.Command {
	a := &adminFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the control plane serves, what it waits for, and what it holds back",
		Long: `Status reports the control plane's state from its admin API (GET /status):
whether it serves a configuration to the proxies or still waits for the first
sync of a source (the policy files or Consul KV until read and valid, the
Consul catalog until its first snapshot), the served version, the last
reload and its error, a destructive policy change held until the policy
stays unchanged (--destructive-hold), and the proxies whose configuration is
held because a push would have removed every route or endpoint they have
without a policy change, and every policy resource that is not serving as
written (rejected, serving its last good version, a SecurityPolicy failing
closed) or has a reference or parent that does not resolve, with its reason
and file:line (from GET /resources; meshgate get shows their whole status).
It sums the proxies up: connected by role, how many accepted the latest
configuration of every type (meshgate proxies shows each), how many are held
or rejecting a configuration.
-o json and -o yaml print the whole answer of GET /status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputFormat("status", output); err != nil {
				return err
			}
			var st controlplane.Status
			switch output {
			case "json":
				var raw json.RawMessage
				if err := a.call(cmd.Context(), "GET", "/status", nil, &raw); err != nil {
					return err
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), string(raw))
				return err
			case "yaml":
				var generic any
				if err := a.call(cmd.Context(), "GET", "/status", nil, &generic); err != nil {
					return err
				}
				return writeStructured(cmd.OutOrStdout(), output, generic)
			}
			if err := a.call(cmd.Context(), "GET", "/status", nil, &st); err != nil {
				return err
			}
			if err := printStatus(cmd.OutOrStdout(), st); err != nil {
				return err
			}
			var resources controlplane.Resources
			if err := a.call(cmd.Context(), "GET", "/resources", nil, &resources); err != nil {
				return nil // a control plane without per-resource status
			}
			return printResourceProblems(cmd.OutOrStdout(), resources.Items)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	a.register(cmd)
	return cmd
}

// printStatus writes the control plane's status for an operator.
func printStatus(w io.Writer, st controlplane.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	serving := "yes"
	if !st.Serving {
		serving = "no: nothing is pushed to the proxies until every source has synced"
		if len(st.WaitingFor) > 0 {
			serving += " (waiting for: " + strings.Join(st.WaitingFor, ", ") + ")"
		}
	}
	held := 0
	for _, p := range st.Proxies {
		if p.Held != "" {
			held++
		}
	}
	fmt.Fprintf(tw, "health:\t%s\n", health(st))
	fmt.Fprintf(tw, "serving:\t%s\n", serving)
	fmt.Fprintf(tw, "version:\t%s\n", cmp.Or(st.Version, "-"))
	fmt.Fprintf(tw, "last reload:\t%s\n", formatTime(st.LastReload))
	fmt.Fprintf(tw, "last error:\t%s\n", cmp.Or(strings.ReplaceAll(st.LastError, "\n", "; "), "-"))
	fmt.Fprintf(tw, "rejected resources:\t%d\n", st.RejectedResources)
	if h := st.HeldPolicyChange; h != nil {
		fmt.Fprintf(tw, "held policy change:\t%s (since %s; applied at %s if the policy stays unchanged)\n", h.Reason, formatTime(h.Since), formatTime(h.ApplyAt))
	}
	fmt.Fprintf(tw, "proxies:\t%d (%d held)\n", len(st.Proxies), held)
	if c := st.ProxyCounts; c.Connected > 0 {
		var roles []string
		for _, role := range slices.Sorted(maps.Keys(c.ByRole)) {
			roles = append(roles, fmt.Sprintf("%s %d", cmp.Or(role, "unknown"), c.ByRole[role]))
		}
		fmt.Fprintf(tw, "  by role:\t%s\n", strings.Join(roles, ", "))
		fmt.Fprintf(tw, "  on the latest config:\t%d of %d (%d rejecting a configuration; meshgate proxies says which)\n", c.OnLatest, c.Connected, c.Nacking)
	}
	for _, p := range st.Proxies {
		if p.Held != "" {
			fmt.Fprintf(tw, "  held %s:\t%s (since %s)\n", p.ID, p.Held, formatTime(p.HeldSince))
		}
	}
	return tw.Flush()
}

// health is the first line of meshgate status: "ok", or "degraded: " and
// what is wrong (not serving, the last reload failed, resources rejected,
// proxies rejecting a configuration, held, or not on the latest one).
func health(st controlplane.Status) string {
	var problems []string
	if !st.Serving {
		problems = append(problems, "not serving")
	}
	if st.LastError != "" {
		problems = append(problems, "policy problems")
	}
	if st.RejectedResources > 0 {
		problems = append(problems, fmt.Sprintf("%d resource(s) not accepted", st.RejectedResources))
	}
	c := st.ProxyCounts
	if c.Nacking > 0 {
		problems = append(problems, fmt.Sprintf("%d proxy(ies) rejecting a configuration", c.Nacking))
	}
	if c.Held > 0 {
		problems = append(problems, fmt.Sprintf("%d proxy(ies) held", c.Held))
	}
	if behind := c.Connected - c.OnLatest - c.Held; behind > 0 {
		problems = append(problems, fmt.Sprintf("%d proxy(ies) not on the latest config", behind))
	}
	if len(problems) == 0 {
		return "ok"
	}
	return "degraded: " + strings.Join(problems, ", ")
}

// printResourceProblems lists the resources that are not serving as
// written, or whose references or parents do not all resolve: state,
// reason, and each problem with its file:line.
func printResourceProblems(w io.Writer, items []policy.ResourceStatus) error {
	var problems []policy.ResourceStatus
	for _, r := range items {
		if r.State != policy.StateAccepted || len(r.Problems) > 0 || r.Reason != "" {
			problems = append(problems, r)
		}
	}
	if len(problems) == 0 {
		_, err := fmt.Fprintln(w, "resources:  every resource accepted")
		return err
	}
	fmt.Fprintf(w, "resources not accepted, or with references or parents that do not resolve (%d):\n", len(problems))
	for _, r := range problems {
		fmt.Fprintf(w, "  %s %s/%s: %s (%s:%d)\n", r.Kind, r.Namespace, r.Name, resourceState(r), r.File, r.Line)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "    %s\n", p)
		}
	}
	return nil
}
