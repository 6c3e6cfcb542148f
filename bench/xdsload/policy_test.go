package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestGeneratedPolicyLoads proves the generated files are a valid policy of
// the expected size, before and after each change, in both scopes and with
// both endpoint sources (with consul: validated together with the services
// the control plane discovers from consulRegistrations, as it does).
func TestGeneratedPolicyLoads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		scope        string
		endpoints    string
		services     int
		withAdded    bool
		endpointGen  int
		wantServices int
		wantRoutes   int
		wantPolicies int // SecurityPolicies
	}{
		{"initial", scopeAll, endpointsFile, 25, false, 0, 25, 25 + 3, 0},
		{"policy change", scopeAll, endpointsFile, 25, true, 0, 26, 26 + 3, 0},
		{"endpoint change", scopeAll, endpointsFile, 25, true, 1, 26, 26 + 3, 0},
		{"authorized initial", scopeAuthorized, endpointsFile, 25, false, 0, 25, 25 + 3, 25},
		{"authorized policy change", scopeAuthorized, endpointsFile, 25, true, 0, 26, 26 + 3, 26},
		{"authorized endpoint change", scopeAuthorized, endpointsFile, 25, true, 1, 26, 26 + 3, 26},
		{"authorized two services", scopeAuthorized, endpointsFile, 2, true, 1, 3, 3 + 1, 3},
		{"consul initial", scopeAll, endpointsConsul, 25, false, 0, 25, 25 + 3, 0},
		{"consul endpoint change", scopeAll, endpointsConsul, 25, true, 1, 26, 26 + 3, 0},
		{"consul authorized initial", scopeAuthorized, endpointsConsul, 25, false, 0, 25, 25 + 3, 25},
		{"consul authorized policy change", scopeAuthorized, endpointsConsul, 25, true, 0, 26, 26 + 3, 26},
		{"consul authorized endpoint change", scopeAuthorized, endpointsConsul, 25, true, 1, 26, 26 + 3, 26},
		{"consul authorized two services", scopeAuthorized, endpointsConsul, 2, true, 1, 3, 3 + 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := generatePolicy(tt.services, tt.scope, tt.endpoints, tt.withAdded, tt.endpointGen)
			var set *policy.Set
			var err error
			if tt.endpoints == endpointsConsul {
				// As the control plane loads it: the discovered services
				// first, then the policy files.
				ops := slices.Concat(consulRegistrations(tt.services)...)
				if tt.endpointGen > 0 {
					ops = append(ops, consulEndpointChange()...)
				}
				all := discoveredFiles(t, ops)
				for _, f := range files.files() {
					all = append(all, policy.File{Name: f[0], Data: []byte(f[1])})
				}
				set, err = policy.LoadFiles(all...)
			} else {
				dir := t.TempDir()
				for _, f := range files.files() {
					if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				set, err = policy.Load(dir)
			}
			if err != nil {
				t.Fatalf("generated policy does not load: %v", err)
			}
			if len(set.Services) != tt.wantServices || len(set.HTTPRoutes) != tt.wantRoutes || len(set.Gateways) != 1 {
				t.Fatalf("got %d services, %d routes, %d gateways; want %d, %d, 1",
					len(set.Services), len(set.HTTPRoutes), len(set.Gateways), tt.wantServices, tt.wantRoutes)
			}
			// svc-0000: port 80 (cluster default/svc-0000:80) and its two
			// endpoints, endpoint 0 moved by the endpoint change.
			var svc0 *policy.Service
			for _, s := range set.Services {
				if s.Name == serviceName(0) {
					svc0 = s
				}
			}
			if svc0 == nil || len(svc0.Spec.Ports) != 1 || svc0.Spec.Ports[0].Port != servicePort || svc0.Namespace != namespace {
				t.Fatalf("svc-0000 = %+v, want one port %d in namespace %s", svc0, servicePort, namespace)
			}
			var addrs []string
			for _, ep := range svc0.Spec.Endpoints {
				addrs = append(addrs, ep.Address)
			}
			if want := []string{endpointAddr(0, 0, tt.endpointGen), endpointAddr(0, 1, tt.endpointGen)}; !slices.Equal(addrs, want) {
				t.Fatalf("svc-0000 endpoints %v, want %v", addrs, want)
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
