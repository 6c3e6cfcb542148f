package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/ca"
)

func newCACmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the mesh certificate authority and rotate its root",
		Args:  cobra.NoArgs,
	}
	a.register(cmd)
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the roots, which one signs, and the rotation phase",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st ca.Status
			if err := a.call(cmd.Context(), "GET", "/ca", nil, &st); err != nil {
				return err
			}
			return printCAStatus(cmd.OutOrStdout(), st)
		},
	}
	var force bool
	rotate := &cobra.Command{
		Use:   "rotate begin|switch|finish",
		Short: "Rotate the root: begin (trust a new root), switch (it signs), finish (drop the old)",
		Long: `Root rotation, one step at a time, each safe under traffic:
  begin   a new root is added to the trust bundle; the old one still signs
  switch  the new root signs; proxies renew from it
  finish  the old root is dropped; refused until one certificate TTL after
          switch, unless --force`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(ca.StepBegin), string(ca.StepSwitch), string(ca.StepFinish)},
		RunE: func(cmd *cobra.Command, args []string) error {
			step := ca.Step(args[0])
			switch step {
			case ca.StepBegin, ca.StepSwitch, ca.StepFinish:
			default:
				return &exitError{code: 2, err: fmt.Errorf("unknown step %q: want begin, switch or finish", args[0])}
			}
			var st ca.Status
			if err := a.call(cmd.Context(), "POST", "/ca/rotate", controlplane.RotateRequest{Step: step, Force: force}, &st); err != nil {
				return err
			}
			return printCAStatus(cmd.OutOrStdout(), st)
		},
	}
	rotate.Flags().BoolVar(&force, "force", false, "finish even though certificates of the old root may still be valid")
	cmd.AddCommand(status, rotate)
	return cmd
}

func printCAStatus(out io.Writer, st ca.Status) error {
	fmt.Fprintf(out, "phase: %s\n", st.Phase)
	if st.SwitchedAt != nil {
		fmt.Fprintf(out, "switched at: %s\n", formatTime(*st.SwitchedAt))
	}
	if st.Operator {
		fmt.Fprintln(out, "root supplied by the operator (--ca-cert/--ca-key)")
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSIGNER\tNOT-AFTER\tSHA256")
	for _, r := range st.Roots {
		signer := ""
		if r.Signer {
			signer = "*"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.ID, signer, formatTime(r.NotAfter), r.SHA256)
	}
	return w.Flush()
}
