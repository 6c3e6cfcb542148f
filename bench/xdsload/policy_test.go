package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestGeneratedPolicyLoads proves the generated files are a valid policy of
// the expected size, before and after each change, in both scopes.
func TestGeneratedPolicyLoads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		scope        string
		services     int
		withAdded    bool
		endpointGen  int
		wantServices int
		wantRoutes   int
		wantPolicies int // SecurityPolicies
	}{
		{"initial", scopeAll, 25, false, 0, 25, 25 + 3, 0},
		{"policy change", scopeAll, 25, true, 0, 26, 26 + 3, 0},
		{"endpoint change", scopeAll, 25, true, 1, 26, 26 + 3, 0},
		{"authorized initial", scopeAuthorized, 25, false, 0, 25, 25 + 3, 25},
		{"authorized policy change", scopeAuthorized, 25, true, 0, 26, 26 + 3, 26},
		{"authorized endpoint change", scopeAuthorized, 25, true, 1, 26, 26 + 3, 26},
		{"authorized two services", scopeAuthorized, 2, true, 1, 3, 3 + 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			files := generatePolicy(tt.services, tt.scope, tt.withAdded, tt.endpointGen)
			for _, f := range files.files() {
				if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			set, err := policy.Load(dir)
			if err != nil {
				t.Fatalf("generated policy does not load: %v", err)
			}
			if len(set.Services) != tt.wantServices || len(set.HTTPRoutes) != tt.wantRoutes || len(set.Gateways) != 1 {
				t.Fatalf("got %d services, %d routes, %d gateways; want %d, %d, 1",
					len(set.Services), len(set.HTTPRoutes), len(set.Gateways), tt.wantServices, tt.wantRoutes)
			}
			if want := endpointAddr(0, 0, tt.endpointGen); !strings.Contains(files.services, want) {
				t.Fatalf("endpoint %s missing", want)
			}
			if len(set.SecurityPolicies) != tt.wantPolicies {
				t.Fatalf("got %d SecurityPolicies, want %d", len(set.SecurityPolicies), tt.wantPolicies)
			}
			if tt.scope == scopeAll {
				if set.MeshConfig != nil {
					t.Fatalf("scope all has a MeshConfig: %+v", set.MeshConfig.Spec)
				}
				return
			}
			mc := set.MeshConfig
			if mc == nil || mc.Spec.DefaultAction != policy.ActionDeny || mc.Spec.OutboundScope != policy.OutboundScopeAuthorized {
				t.Fatalf("MeshConfig = %+v, want defaultAction DENY and outboundScope Authorized", mc)
			}
			allowed := map[string][]string{} // service -> services allowed to call it
			for _, sp := range set.SecurityPolicies {
				if len(sp.Spec.TargetRefs) != 1 || len(sp.Spec.Rules) != 1 || len(sp.Spec.Rules[0].From) != 1 ||
					sp.Spec.Rules[0].Action != policy.ActionAllow {
					t.Fatalf("SecurityPolicy %s: want one target and one ALLOW rule with one source: %+v", sp.Name, sp.Spec)
				}
				allowed[sp.Spec.TargetRefs[0].Name] = sp.Spec.Rules[0].From[0].Services
			}
			// Every stream must receive the changes: svc-0000 and the added
			// service are callable by every identity.
			for _, name := range []string{serviceName(0), addedService} {
				if name == addedService && !tt.withAdded {
					continue
				}
				if got := allowed[name]; !slices.Equal(got, []string{"*"}) {
					t.Fatalf("%s callable by %v, want [*]", name, got)
				}
			}
			// The others: their two neighbours and the gateway.
			want := map[string][]string{}
			if tt.services == 25 {
				want[serviceName(1)] = []string{serviceName(0), serviceName(2), gatewayName}
				want[serviceName(24)] = []string{serviceName(23), serviceName(0), gatewayName}
			} else {
				want[serviceName(1)] = []string{serviceName(0), gatewayName}
			}
			for name, w := range want {
				if got := allowed[name]; !slices.Equal(got, w) {
					t.Fatalf("%s callable by %v, want %v", name, got, w)
				}
			}
		})
	}
}

// TestSidecarReach counts, from the generated SecurityPolicies and mesh
// routes, the services a sidecar may call with scopeAuthorized: the few the
// scenario promises (svc-0000, its neighbours, and the backends of their
// mesh routes), and svc-added after the policy change.
func TestSidecarReach(t *testing.T) {
	t.Parallel()
	const n = 1000
	for _, i := range []int{0, 1, 5, 9, 10, 11, 999} {
		got := reach(i, n)
		if !slices.Contains(got, serviceName(0)) || !slices.Contains(got, addedService) {
			t.Errorf("sidecar of %s cannot call svc-0000 or svc-added: %v", serviceName(i), got)
		}
		if len(got) < 3 || len(got) > 6 {
			t.Errorf("sidecar of %s may call %d services, want 3-6: %v", serviceName(i), len(got), got)
		}
	}
}

// reach is what outboundScope Authorized should leave to the sidecar of
// service i: the services whose callers include it (or "*"), plus the
// backends of their mesh HTTPRoutes (every tenth service i splits to i+1).
func reach(i, n int) []string {
	me := serviceName(i)
	var out []string
	add := func(name string) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for j := range n {
		if c := callers(j, n); slices.Contains(c, "*") || slices.Contains(c, me) {
			add(serviceName(j))
			if j%10 == 0 && j+1 < n {
				add(serviceName(j + 1))
			}
		}
	}
	add(addedService) // callable by "*"
	slices.Sort(out)
	return out
}
