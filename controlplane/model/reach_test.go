package model

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

func TestMayAllow(t *testing.T) {
	t.Parallel()
	const (
		frontend = "spiffe://td/ns/default/svc/frontend"
		batch    = "spiffe://td/ns/jobs/svc/batch"
	)
	exact := func(v string) StringMatch { return StringMatch{Kind: MatchExact, Value: v} }
	prefix := func(v string) StringMatch { return StringMatch{Kind: MatchPrefix, Value: v} }
	allowFrom := func(from ...*AuthzFrom) *Authorization {
		return &Authorization{EnforceAllow: true, Allow: []*AuthzRule{{Name: "p/allow", From: from}}}
	}
	tests := []struct {
		name string
		a    *Authorization
		peer string
		want bool
	}{
		{"no authorization", nil, frontend, true},
		{"allow not enforced", &Authorization{}, frontend, true},
		{"default deny, no rule", &Authorization{EnforceAllow: true}, frontend, false},
		{"allow rule without source", &Authorization{EnforceAllow: true, Allow: []*AuthzRule{{Name: "p/any", To: []*AuthzTo{{Methods: []string{"GET"}}}}}}, frontend, true},
		{"allowed service", allowFrom(&AuthzFrom{Services: []StringMatch{exact(frontend)}}), frontend, true},
		{"other service", allowFrom(&AuthzFrom{Services: []StringMatch{exact(frontend)}}), batch, false},
		{"namespace matches", allowFrom(&AuthzFrom{Namespaces: []StringMatch{prefix("spiffe://td/ns/jobs/")}}), batch, true},
		{"every field must match", allowFrom(&AuthzFrom{Services: []StringMatch{exact(frontend)}, Namespaces: []StringMatch{prefix("spiffe://td/ns/jobs/")}}), frontend, false},
		{"identity glob", allowFrom(&AuthzFrom{Identities: []StringMatch{globMatch("spiffe://td/ns/*/svc/front*")}}), frontend, true},
		{"identity glob, no match", allowFrom(&AuthzFrom{Identities: []StringMatch{globMatch("spiffe://td/ns/*/svc/front*")}}), batch, false},
		{"ip block may match anyone", allowFrom(&AuthzFrom{IPBlocks: []string{"10.0.0.0/8"}}), batch, true},
		{"second source entry", allowFrom(&AuthzFrom{Services: []StringMatch{exact(frontend)}}, &AuthzFrom{Services: []StringMatch{exact(batch)}}), batch, true},
		{"deny of every request", &Authorization{Deny: []*AuthzRule{{Name: "p/deny", From: []*AuthzFrom{{Services: []StringMatch{exact(batch)}}}}}}, batch, false},
		{"deny of another peer", &Authorization{Deny: []*AuthzRule{{Name: "p/deny", From: []*AuthzFrom{{Services: []StringMatch{exact(batch)}}}}}}, frontend, true},
		{"deny of some paths only", &Authorization{Deny: []*AuthzRule{{Name: "p/deny", From: []*AuthzFrom{{Services: []StringMatch{exact(batch)}}}, To: []*AuthzTo{{Paths: []StringMatch{prefix("/admin/")}}}}}}, batch, true},
		{"deny with an ip block", &Authorization{Deny: []*AuthzRule{{Name: "p/deny", From: []*AuthzFrom{{Services: []StringMatch{exact(batch)}, IPBlocks: []string{"10.0.0.0/8"}}}}}}, batch, true},
		{"deny of everyone", &Authorization{Deny: []*AuthzRule{{Name: "p/deny"}}}, frontend, false},
		{"deny wins over allow", &Authorization{EnforceAllow: true,
			Deny:  []*AuthzRule{{Name: "p/deny", From: []*AuthzFrom{{Services: []StringMatch{exact(batch)}}}}},
			Allow: []*AuthzRule{{Name: "p/allow"}}}, batch, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.a.MayAllow(tt.peer, nil); got != tt.want {
				t.Errorf("MayAllow(%s) = %v, want %v", tt.peer, got, tt.want)
			}
		})
	}
}

// TestMayCall: with the Authorized scope, who may call whom follows the
// SecurityPolicies; with the default scope, everyone may call everything.
func TestMayCall(t *testing.T) {
	t.Parallel()
	const services = `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec: {ports: [{port: 80}]}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: payments}
spec: {ports: [{port: 80}]}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: frontend}
spec: {ports: [{port: 80}]}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: reports}
spec: {ports: [{port: 80}]}
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders}
spec:
  targetRefs: [{kind: Service, name: orders}]
  rules: [{action: ALLOW, from: [{services: [frontend]}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: payments}
spec:
  targetRefs: [{kind: Service, name: payments}]
  rules: [{action: ALLOW, from: [{identities: ["spiffe://meshgate.local/ns/default/svc/ord*"]}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: reports}
spec:
  targetRefs: [{kind: Service, name: reports}]
  rules: [{action: DENY, from: [{services: [frontend]}]}]
`
	tests := []struct {
		scope string
		want  map[string][]string // caller → services it may call
	}{
		{"", map[string][]string{
			"frontend": {"frontend", "orders", "payments", "reports"},
			"orders":   {"frontend", "orders", "payments", "reports"},
		}},
		{"outboundScope: Authorized", map[string][]string{ // frontend has no policy: open to all
			"frontend": {"frontend", "orders"},
			"orders":   {"frontend", "payments", "reports"},
			"stranger": {"frontend", "reports"},
		}},
		{"{outboundScope: Authorized, defaultAction: DENY}", map[string][]string{
			"frontend": {"orders"},
			"orders":   {"payments"},
			"stranger": nil,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.scope, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			doc := services
			if tt.scope != "" {
				spec := tt.scope
				if spec[0] != '{' {
					spec = "{" + spec + "}"
				}
				doc += "---\napiVersion: meshgate.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: " + spec + "\n"
			}
			if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			set, err := policy.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Compile(set)
			if err != nil {
				t.Fatal(err)
			}
			for caller, want := range tt.want {
				var got []string
				callable := m.CallableBy(NamespacedName{Namespace: "default", Name: caller})
				for i, svc := range m.Services {
					if m.MayCall(NamespacedName{Namespace: "default", Name: caller}, svc) {
						got = append(got, svc.Name)
					}
					if callable[i] != slices.Contains(got, svc.Name) {
						t.Errorf("CallableBy(%s)[%s] = %v, MayCall says otherwise", caller, svc.Name, callable[i])
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s may call %v, want %v", caller, got, want)
				}
			}
		})
	}
}
