package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/policy"
)

// consumerRow is one declared consumer in `meshgate get consumers`: an
// API key consumer, a basic-auth user or a JWT consumer (a subject its
// provider names), and the SecurityPolicy declaring it.
type consumerRow struct {
	Kind      string `json:"kind"` // apikey, basic, jwt: the kind label of its metrics
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	// Provider and Subject: a JWT consumer's provider and sub claim.
	Provider string `json:"provider,omitempty"`
	Subject  string `json:"subject,omitempty"`
	// Secret: the consumers of an apiKey.secretRef are listed as one row
	// naming the Secret (their names are its keys, not in the policy).
	Secret string `json:"secret,omitempty"`
}

// isConsumersKind: KIND of `meshgate get` is the consumers view.
func isConsumersKind(kind string) bool {
	switch strings.ToLower(kind) {
	case "consumer", "consumers":
		return true
	}
	return false
}

// getConsumers lists the declared consumers of the SecurityPolicies the
// control plane serves (name "": all of them; else those called name).
func getConsumers(ctx context.Context, w io.Writer, admin *adminFlags, namespace, name, output string) error {
	var list controlplane.Resources
	if err := admin.call(ctx, "GET", "/resources?kind=SecurityPolicy", nil, &list); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("get consumers: %w", err)}
	}
	rows, err := consumerRows(list.Items)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("get consumers: %w", err)}
	}
	if name != "" {
		rows = slices.DeleteFunc(rows, func(r consumerRow) bool { return r.Name != name || r.Namespace != namespace })
		if len(rows) == 0 {
			return &exitError{code: 1, err: fmt.Errorf("get consumers: no consumer %q in namespace %q", name, namespace)}
		}
	}
	return printConsumers(w, rows, output)
}

// printConsumers writes rows as a table, YAML or JSON ({"items": [...]}).
func printConsumers(w io.Writer, rows []consumerRow, output string) error {
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
	for _, r := range rows {
		detail := ""
		switch {
		case r.Subject != "":
			detail = "provider " + r.Provider + ", subject " + r.Subject
		case r.Secret != "":
			detail = "the consumers of secret " + r.Secret
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, r.Policy, detail)
	}
	return tw.Flush()
}

// consumerRows extracts the declared consumers of SecurityPolicy
// resources, in their order and each policy's declaration order.
func consumerRows(items []policy.ResourceStatus) ([]consumerRow, error) {
	var rows []consumerRow
	for _, it := range items {
		if it.Object == nil || it.Kind != "SecurityPolicy" {
			continue
		}
		raw, err := json.Marshal(it.Object.Spec)
		if err != nil {
			return nil, err
		}
		var spec policy.SecurityPolicySpec
		if err := json.Unmarshal(raw, &spec); err != nil {
			return nil, fmt.Errorf("SecurityPolicy %s/%s: %w", it.Namespace, it.Name, err)
		}
		row := func(kind, name string) consumerRow {
			return consumerRow{Kind: kind, Name: name, Namespace: it.Namespace, Policy: it.Name}
		}
		if k := spec.APIKey; k != nil {
			for _, c := range k.Consumers {
				rows = append(rows, row("apikey", c.Name))
			}
			if k.SecretRef != nil {
				r := row("apikey", "*")
				r.Secret = k.SecretRef.Name
				rows = append(rows, r)
			}
		}
		if b := spec.BasicAuth; b != nil {
			for line := range strings.SplitSeq(b.Htpasswd, "\n") {
				if user, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && user != "" && !strings.HasPrefix(user, "#") {
					rows = append(rows, row("basic", user))
				}
			}
		}
		if j := spec.JWT; j != nil {
			for _, p := range j.Providers {
				for _, c := range p.Consumers {
					r := row("jwt", c.Name)
					r.Provider, r.Subject = p.Name, c.Subject
					rows = append(rows, r)
				}
			}
		}
	}
	return rows, nil
}
