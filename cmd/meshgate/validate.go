package main

import (
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
	cmd := &cobra.Command{
		Use:   "validate -f PATH [-f PATH...]",
		Short: "Check policy files and report every error with its file, line and field",
		Long: "Validate loads policy files and directories (every *.yaml and *.yml file in a\n" +
			"directory, not recursive) as one set, exactly as the control plane would, and\n" +
			"prints every problem found, one per line, as file:line: field: message, and\n" +
			"exits 1 if there is any (the control plane would reject those resources, or\n" +
			"leave those references unresolved, and serve the rest). Warnings (accepted\n" +
			"resources written in a tolerated but non-standard way) are printed as\n" +
			"\"warning: ...\" and do not change the exit code.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(paths) == 0 {
				return &exitError{code: 2, err: errors.New("validate: give at least one policy file or directory with -f")}
			}
			return runValidate(cmd.OutOrStdout(), cmd.ErrOrStderr(), paths)
		},
	}
	cmd.Flags().StringArrayVarP(&paths, "filename", "f", nil, "policy file or directory (repeatable)")
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
	fmt.Fprintf(stdout, "ok: %s, %s, %s, %s\n",
		plural(len(set.Files), "file", "files"),
		plural(len(set.Gateways), "Gateway", "Gateways"),
		plural(len(set.HTTPRoutes), "HTTPRoute", "HTTPRoutes"),
		plural(len(set.Services), "Service", "Services"))
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
