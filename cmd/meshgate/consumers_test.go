package main

import (
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestPrintConsumers: the table names each consumer's kind, namespace,
// name and policy, a JWT consumer's provider and subject, an API key
// consumer's Secret; -o json lists them as items.
func TestPrintConsumers(t *testing.T) {
	t.Parallel()
	rows := []policy.Consumer{
		{Kind: "apikey", Name: "acme", Namespace: "default", Policy: "keys"},
		{Kind: "apikey", Name: "globex", Namespace: "default", Policy: "keys", Secret: "more"},
		{Kind: "jwt", Name: "billing", Namespace: "default", Policy: "tokens", Provider: "idp", Subject: "svc-billing"},
	}
	for _, tc := range []struct{ output, want string }{
		{"", "KIND NAMESPACE NAME POLICY DETAIL apikey default acme keys apikey default globex keys from secret more jwt default billing tokens provider idp, subject svc-billing"},
		{"json", `{ "items": [ { "kind": "apikey", "name": "acme", "namespace": "default", "policy": "keys" },`},
	} {
		var b strings.Builder
		if err := printConsumers(&b, rows, tc.output); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(strings.Fields(b.String()), " "); !strings.Contains(got, tc.want) {
			t.Errorf("-o %q:\n%s\nwant %q", tc.output, b.String(), tc.want)
		}
	}
	var b strings.Builder
	if err := printConsumers(&b, nil, ""); err != nil || !strings.Contains(b.String(), "No consumers declared.") {
		t.Errorf("no consumers: %v %q", err, b.String())
	}
}
