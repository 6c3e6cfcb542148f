package policy

import (
	"fmt"
	"slices"
	"testing"
)

// TestConsumers: the consumers the accepted SecurityPolicies declare, by
// kind: API key consumers (of the policy, then of its Secret), basic-auth
// users, JWT consumers with their provider and subject; names only.
func TestConsumers(t *testing.T) {
	t.Parallel()
	const doc = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: v1
kind: Secret
metadata: {name: more}
stringData:
  globex: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  apiKey:
    consumers: [{name: acme, sha256: ["fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"]}]
    secretRef: {name: more}
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
	r := Evaluate(Input{Files: []File{{Name: "p.yaml", Data: []byte(doc)}}})
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	var got []string
	for _, c := range r.Set.Consumers() {
		got = append(got, fmt.Sprintf("%s %s/%s policy=%s provider=%s subject=%s secret=%s", c.Kind, c.Namespace, c.Name, c.Policy, c.Provider, c.Subject, c.Secret))
	}
	want := []string{
		"apikey default/acme policy=keys provider= subject= secret=",
		"apikey default/globex policy=keys provider= subject= secret=more",
		"basic default/bob policy=users provider= subject= secret=",
		"jwt default/billing policy=tokens provider=idp subject=svc-billing secret=",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("consumers:\n%v\nwant:\n%v", got, want)
	}
	if c := (*Set)(nil).Consumers(); len(c) != 0 {
		t.Errorf("nil set: %v", c)
	}
}
