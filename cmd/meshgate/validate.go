package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/meshgate/meshgate/policy"
	"github.com/spf13/cobra"
)

// newValidateCmd builds `meshgate validate`: load policy files, print every
// problem, and exit 1 when there is any.
func newValidateCmd() *cobra.Command {
	var paths []string
	var output string
	cmd := &cobra.Command{
		Use:   "validate -f PATH [-f PATH...]",
		Short: "Check policy files and report every error with its file, line and field",
		Long: "Validate loads policy files and directories (every *.yaml and *.yml file in a\n" +
			"directory, not recursive) as one set, exactly as the control plane would, and\n" +
			"prints every problem found, one per line, as file:line: field: message, and\n" +
			"exits 1 if there is any (the control plane would reject those resources, or\n" +
			"leave those references unresolved, and serve the rest). Warnings (accepted\n" +
			"resources written in a tolerated but non-standard way) are printed as\n" +
			"\"warning: ...\" and do not change the exit code.\n\n" +
			"-o json prints one JSON document instead: the errors, the warnings, and every\n" +
			"resource with what the control plane would do with it (state Accepted or\n" +
			"Rejected, the reason of its first failing condition, its problems): a route\n" +
			"whose only problems are references that do not resolve is Accepted, and\n" +
			"those backends answer 500. The exit code is the same.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(paths) == 0 {
				return &exitError{code: 2, err: errors.New("validate: give at least one policy file or directory with -f")}
			}
			switch output {
			case "":
				return runValidate(cmd.OutOrStdout(), cmd.ErrOrStderr(), paths)
			case "json":
				return runValidateJSON(cmd.OutOrStdout(), paths)
			}
			return &exitError{code: 2, err: fmt.Errorf("validate: unknown output format %q (want json, or none for text)", output)}
		},
	}
	cmd.Flags().StringArrayVarP(&paths, "filename", "f", nil, "policy file or directory (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: text)")
	return cmd
}

// runValidate loads paths, writes a summary to stdout or every error to
// stderr, and returns an exitError when the policy is invalid.
func runValidate(stdout, stderr io.Writer, paths []string) error {
	set, warnings, err := policy.LoadWithWarnings(paths...)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning: "+w.Error())
	}
	if err != nil {
		var list policy.ErrorList
		if !errors.As(err, &list) {
			return &exitError{code: 1, err: fmt.Errorf("validate: %w", err)}
		}
		for _, e := range list {
			fmt.Fprintln(stderr, e)
		}
		return &exitError{code: 1, err: fmt.Errorf("%s in policy", plural(len(list), "error", "errors"))}
	}
	grpcRoutes := 0 // held among the HTTPRoutes (policy.KindGRPCRoute)
	for _, r := range set.HTTPRoutes {
		if r.GRPC != nil {
			grpcRoutes++
		}
	}
	routes := plural(len(set.HTTPRoutes)-grpcRoutes, "HTTPRoute", "HTTPRoutes")
	if grpcRoutes > 0 {
		routes += ", " + plural(grpcRoutes, "GRPCRoute", "GRPCRoutes")
	}
	fmt.Fprintf(stdout, "ok: %s, %s, %s, %s\n",
		plural(len(set.Files), "file", "files"),
		plural(len(set.Gateways), "Gateway", "Gateways"),
		routes,
		plural(len(set.Services), "Service", "Services"))
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// validateReport is the document `meshgate validate -o json` prints.
type validateReport struct {
	// Valid is true when there is no error.
	Valid    bool     `json:"valid"`
	Errors   []string `json:"errors"`
	Warnings []string `json:"warnings"`
	// Resources are every resource of the files, with what the control
	// plane would do with it.
	Resources []validateResource `json:"resources"`
}

// validateResource is one resource of a validateReport.
type validateResource struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	File      string   `json:"file"`
	Line      int      `json:"line"`
	State     string   `json:"state"`
	Reason    string   `json:"reason,omitempty"`
	Problems  []string `json:"problems,omitempty"`
}

// runValidateJSON evaluates paths as the control plane would (each
// resource accepted or rejected on its own) and prints a validateReport;
// it returns an exitError when there is any error, as runValidate does.
func runValidateJSON(stdout io.Writer, paths []string) error {
	result := policy.EvaluatePaths(paths...)
	report := validateReport{Valid: len(result.Errors) == 0, Errors: []string{}, Warnings: []string{}, Resources: []validateResource{}}
	for _, e := range result.Errors {
		report.Errors = append(report.Errors, e.Error())
	}
	for _, w := range result.Warnings {
		report.Warnings = append(report.Warnings, w.Error())
	}
	for _, st := range result.Statuses {
		report.Resources = append(report.Resources, validateResource{
			Kind: st.Kind, Namespace: st.Namespace, Name: st.Name, File: st.File, Line: st.Line,
			State: st.State, Reason: st.Reason, Problems: st.Problems,
		})
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(report); err != nil {
		return fmt.Errorf("validate: writing the report: %w", err)
	}
	if n := len(result.Errors); n > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%s in policy", plural(n, "error", "errors"))}
	}
	return nil
}
