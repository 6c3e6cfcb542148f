package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/policy"
)

// isConsumersKind: KIND of `meshgate get` is the consumers view.
func isConsumersKind(kind string) bool {
	switch strings.ToLower(kind) {
	case "consumer", "consumers":
		return true
	}
	return false
}

// getConsumers lists the consumers the SecurityPolicies the control plane
// serves declare (GET /consumers): all of them, or those called name in
// namespace.
func getConsumers(ctx context.Context, w io.Writer, admin *adminFlags, namespace, name, output string) error {
	var list controlplane.Consumers
	if err := admin.call(ctx, "GET", "/consumers", nil, &list); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("get consumers: %w", err)}
	}
	rows := list.Items
	if name != "" {
		rows = slices.DeleteFunc(rows, func(c policy.Consumer) bool { return c.Name != name || c.Namespace != namespace })
		if len(rows) == 0 {
			return &exitError{code: 1, err: fmt.Errorf("get consumers: no consumer %q in namespace %q", name, namespace)}
		}
	}
	return printConsumers(w, rows, output)
}

// printConsumers writes consumers as a table, YAML or JSON ({"items": [...]}).
func printConsumers(w io.Writer, rows []policy.Consumer, output string) error {
	switch output {
	case "json", "yaml":
		items := make([]any, len(rows))
		for i := range rows {
			items[i] = rows[i]
		}
		if output == "json" {
			return writeJSONItems(w, items, false)
		}
		doc, err := toYAML(map[string]any{"items": items})
		if err != nil {
			return &exitError{code: 1, err: fmt.Errorf("get consumers: %w", err)}
		}
		_, err = w.Write(doc)
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "No consumers declared.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tPOLICY\tDETAIL")
	for _, c := range rows {
		detail := ""
		switch {
		case c.Subject != "":
			detail = "provider " + c.Provider + ", subject " + c.Subject
		case c.Secret != "":
			detail = "from secret " + c.Secret
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Kind, c.Namespace, c.Name, c.Policy, detail)
	}
	return tw.Flush()
}
