package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

const consumersPolicy = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  apiKey:
    consumers: [{name: acme, sha256: ["2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: users}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  basicAuth:
    htpasswd: |
      bob:{SHA}hsAaMBat8aKiQgxhKhAqvbXOPbw=
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: tokens}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  jwt:
    providers:
      - name: idp
        localJWKS: {file: /etc/meshgate/jwks.json}
        consumers: [{name: billing, subject: svc-billing}]
`

// TestGetConsumers: the consumers of the SecurityPolicies the control
// plane shows (as its admin API sends them: JSON) are listed with their
// kind and policy, a JWT consumer with its provider and subject; a name
// selects one.
func TestGetConsumers(t *testing.T) {
	t.Parallel()
	r := policy.Evaluate(policy.Input{Files: []policy.File{{Name: "p.yaml", Data: []byte(consumersPolicy)}}})
	raw, err := json.Marshal(r.Statuses)
	if err != nil {
		t.Fatal(err)
	}
	var items []policy.ResourceStatus
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatal(err)
	}
	rows, err := consumerRows(items)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(rows))
	for i, row := range rows {
		got[i] = fmt.Sprintf("%s %s/%s %s %s %s", row.Kind, row.Namespace, row.Name, row.Policy, row.Provider, row.Subject)
	}
	want := map[string]bool{"apikey default/acme keys  ": true, "basic default/bob users  ": true, "jwt default/billing tokens idp svc-billing": true}
	if len(got) != len(want) {
		t.Fatalf("rows %q, want %v", got, want)
	}
	for _, g := range got {
		if !want[g] {
			t.Errorf("row %q, want one of %v", g, want)
		}
	}
	var b strings.Builder
	tw := strings.Join(strings.Fields(func() string {
		_ = printConsumers(&b, rows, "")
		return b.String()
	}()), " ")
	if !strings.Contains(tw, "KIND NAMESPACE NAME POLICY DETAIL") || !strings.Contains(tw, "jwt default billing tokens provider idp, subject svc-billing") {
		t.Errorf("table:\n%s", b.String())
	}
}
