package model

import (
	"encoding/json"
	"regexp"
	"slices"
	"testing"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

func TestPathPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		want    StringMatch
		matches []string
		misses  []string
	}{
		{"/orders", StringMatch{MatchExact, "/orders"}, nil, nil},
		{"/orders/*", StringMatch{MatchPrefix, "/orders/"}, nil, nil},
		{"/*", StringMatch{MatchPrefix, "/"}, nil, nil},
		{"/a/*/b", StringMatch{MatchRegex, `/a/[^/]*/b`}, []string{"/a/x/b", "/a//b"}, []string{"/a/x/y/b", "/a/x/bc"}},
		{"/a/**", StringMatch{MatchRegex, `/a/.*`}, []string{"/a/", "/a/x/y"}, []string{"/a", "/b/x"}},
		{"/v1.0/*.json", StringMatch{MatchRegex, `/v1\.0/[^/]*\.json`}, []string{"/v1.0/x.json"}, []string{"/v1x0/x.json", "/v1.0/a/x.json"}},
		{"/**/b", StringMatch{MatchRegex, `/.*/b`}, []string{"/x/y/b"}, []string{"/x/y/c"}},
	}
	for _, tt := range tests {
		got := PathPattern(tt.pattern)
		if got != tt.want {
			t.Errorf("PathPattern(%q) = %+v, want %+v", tt.pattern, got, tt.want)
			continue
		}
		if got.Kind != MatchRegex {
			continue
		}
		re := regexp.MustCompile("^(?:" + got.Value + ")$")
		for _, s := range tt.matches {
			if !re.MatchString(s) {
				t.Errorf("%q does not match %q", tt.pattern, s)
			}
		}
		for _, s := range tt.misses {
			if re.MatchString(s) {
				t.Errorf("%q matches %q", tt.pattern, s)
			}
		}
	}
}

func TestSPIFFEID(t *testing.T) {
	t.Parallel()
	if got := DefaultMesh().SPIFFEID("shop", "orders"); got != "spiffe://meshgate.local/ns/shop/svc/orders" {
		t.Errorf("SPIFFEID = %s", got)
	}
}

// zeroTrustSet has one service, one gateway with a route, and a policy per
// target kind.
func zeroTrustSet(mc *policy.MeshConfig) *policy.Set {
	g := gateway(gwapiv1.Listener{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType})
	r := route("default", "shop", nil, nil)
	port := int32(80)
	r.Spec.Rules[0].BackendRefs = []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Port: &port}}}}
	gwGroup := policy.GatewayGroup
	return &policy.Set{
		MeshConfig: mc,
		Gateways:   []*policy.Gateway{g},
		HTTPRoutes: []*policy.HTTPRoute{r},
		Services: []*policy.Service{
			{Name: "orders", Namespace: "default", Spec: policy.ServiceSpec{
				Ports:     []policy.ServicePort{{Port: 80}},
				Endpoints: []policy.Endpoint{{Address: "127.0.0.1:1", Sidecar: true}, {Address: "127.0.0.1:2"}},
			}},
			{Name: "payments", Namespace: "default", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}},
		},
		SecurityPolicies: []*policy.SecurityPolicy{
			{Name: "orders-callers", Namespace: "default", Spec: policy.SecurityPolicySpec{
				TargetRefs: []policy.PolicyTargetRef{{Kind: policy.KindService, Name: "orders"}},
				MTLS:       &policy.MTLS{Mode: policy.MTLSPermissive},
				Rules: []policy.SecurityRule{
					{Name: "no-admin", Action: policy.ActionDeny, To: []policy.RuleOperation{{Paths: []string{"/admin/*"}}}},
					{Action: policy.ActionAllow, From: []policy.RuleSource{
						{Services: []string{"frontend", "ops/tools", "*"}, Namespaces: []string{"ops"}},
						{Identities: []string{"spiffe://x/ns/*/svc/a"}, IPBlocks: []string{"127.0.0.1", "10.0.0.0/8"}},
					}, To: []policy.RuleOperation{{Methods: []string{"GET"}, Headers: []policy.RuleHeader{{Name: "X-Env", Value: "prod"}}}}},
				},
			}},
			{Name: "edge-deny", Namespace: "default", Spec: policy.SecurityPolicySpec{
				TargetRefs: []policy.PolicyTargetRef{{Group: &gwGroup, Kind: policy.KindGateway, Name: "edge"}},
				Rules:      []policy.SecurityRule{{Action: policy.ActionDeny, From: []policy.RuleSource{{IPBlocks: []string{"192.0.2.0/24"}}}}},
			}},
			{Name: "shop-allow", Namespace: "default", Spec: policy.SecurityPolicySpec{
				TargetRefs: []policy.PolicyTargetRef{{Kind: policy.KindHTTPRoute, Name: "shop"}},
				Rules:      []policy.SecurityRule{{Name: "local", Action: policy.ActionAllow, From: []policy.RuleSource{{IPBlocks: []string{"127.0.0.0/8"}}}}},
			}},
		},
	}
}

func TestCompileZeroTrust(t *testing.T) {
	t.Parallel()
	m, err := Compile(zeroTrustSet(nil))
	if err != nil {
		t.Fatal(err)
	}
	if m.Mesh != DefaultMesh() || m.Mesh.CertificateTTL != 24*time.Hour || m.Mesh.MTLSMode != policy.MTLSStrict {
		t.Errorf("mesh = %+v, want defaults", m.Mesh)
	}
	orders, payments := m.Service("default", "orders"), m.Service("default", "payments")
	if orders.MTLSMode != policy.MTLSPermissive || payments.MTLSMode != policy.MTLSStrict {
		t.Errorf("mtls modes: orders %s payments %s", orders.MTLSMode, payments.MTLSMode)
	}
	if eps := m.Endpoints(orders.Ports[0]); !eps[0].Sidecar || eps[1].Sidecar || !m.HasSidecarEndpoints(orders.Ports[0]) {
		t.Errorf("orders endpoints = %+v", eps)
	}
	if payments.Authorization != nil {
		t.Errorf("payments has no policy and default ALLOW: authorization = %+v", payments.Authorization)
	}
	a := orders.Authorization
	if a == nil || !slices.Equal(a.Policies, []string{"default/orders-callers"}) || !a.EnforceAllow ||
		len(a.Deny) != 1 || a.Deny[0].Name != "default/orders-callers/no-admin" ||
		len(a.Allow) != 1 || a.Allow[0].Name != "default/orders-callers/1" {
		t.Fatalf("orders authorization = %+v", a)
	}
	from := a.Allow[0].From
	wantServices := []StringMatch{
		{MatchExact, "spiffe://meshgate.local/ns/default/svc/frontend"},
		{MatchExact, "spiffe://meshgate.local/ns/ops/svc/tools"},
		{MatchPrefix, "spiffe://meshgate.local/"},
	}
	if !slices.Equal(from[0].Services, wantServices) || !slices.Equal(from[0].Namespaces, []StringMatch{{MatchPrefix, "spiffe://meshgate.local/ns/ops/"}}) {
		t.Errorf("from[0] = %+v", from[0])
	}
	if !slices.Equal(from[1].Identities, []StringMatch{{MatchRegex, `spiffe://x/ns/[^/]*/svc/a`}}) || !slices.Equal(from[1].IPBlocks, []string{"127.0.0.1/32", "10.0.0.0/8"}) {
		t.Errorf("from[1] = %+v", from[1])
	}
	if to := a.Allow[0].To[0]; !slices.Equal(to.Methods, []string{"GET"}) || to.Headers[0] != (Header{Name: "x-env", Value: "prod"}) {
		t.Errorf("to = %+v", to)
	}
	gw := m.Gateway("default", "edge")
	if gw.Authorization == nil || gw.Authorization.EnforceAllow || len(gw.Authorization.Deny) != 1 {
		t.Errorf("gateway authorization = %+v, want one DENY rule, no ALLOW enforcement", gw.Authorization)
	}
	rule := gw.Ports[0].VirtualHosts[0].Rules[0]
	if rule.Authorization == nil || !rule.Authorization.EnforceAllow || rule.Authorization.Allow[0].Name != "default/shop-allow/local" {
		t.Errorf("route authorization = %+v", rule.Authorization)
	}
	merged := Merge(gw.Authorization, rule.Authorization)
	if !slices.Equal(merged.Policies, []string{"default/edge-deny", "default/shop-allow"}) || len(merged.Deny) != 1 || len(merged.Allow) != 1 || !merged.EnforceAllow {
		t.Errorf("merged = %+v", merged)
	}
	if Merge(nil, nil) != nil || Merge(gw.Authorization, nil) != gw.Authorization {
		t.Error("Merge with nil must return the other side")
	}
}

func TestCompileMeshConfigDefaultDeny(t *testing.T) {
	t.Parallel()
	mc := &policy.MeshConfig{Name: "mesh", Namespace: "default", Spec: policy.MeshConfigSpec{
		TrustDomain: "example.org", MTLS: &policy.MTLS{Mode: policy.MTLSPermissive},
		DefaultAction: policy.ActionDeny, CertificateTTL: "90m", OutboundScope: policy.OutboundScopeAuthorized,
	}}
	m, err := Compile(zeroTrustSet(mc))
	if err != nil {
		t.Fatal(err)
	}
	want := Mesh{TrustDomain: "example.org", MTLSMode: policy.MTLSPermissive, DefaultAction: policy.ActionDeny, CertificateTTL: 90 * time.Minute, OutboundScope: OutboundScopeAuthorized}
	if m.Mesh != want {
		t.Errorf("mesh = %+v, want %+v", m.Mesh, want)
	}
	// Default DENY: a service without policy denies everything.
	payments := m.Service("default", "payments")
	if a := payments.Authorization; a == nil || !a.EnforceAllow || len(a.Allow) != 0 || len(a.Policies) != 0 {
		t.Errorf("payments authorization = %+v, want deny-all", a)
	}
	if payments.MTLSMode != policy.MTLSPermissive {
		t.Errorf("payments mtls = %s, want the mesh default", payments.MTLSMode)
	}
	if gw := m.Gateway("default", "edge"); gw.Authorization == nil || !gw.Authorization.EnforceAllow {
		t.Errorf("gateway authorization = %+v, want ALLOW enforced", gw.Authorization)
	}
	if got := m.Service("default", "orders").Authorization.Allow[0].From[0].Services[0].Value; got != "spiffe://example.org/ns/default/svc/frontend" {
		t.Errorf("service identity = %s, want the MeshConfig trust domain", got)
	}
}

func TestCompileZeroTrustDeterministic(t *testing.T) {
	t.Parallel()
	var first []byte
	for range 10 {
		set := zeroTrustSet(nil)
		slices.Reverse(set.SecurityPolicies)
		m, err := Compile(set)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if first != nil && string(b) != string(first) {
			t.Fatal("two compilations differ")
		}
		first = b
	}
}

func TestCompileRejectsBadPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*policy.Set)
	}{
		{"bad CIDR", func(s *policy.Set) { s.SecurityPolicies[1].Spec.Rules[0].From[0].IPBlocks = []string{"10.0.0.0/99"} }},
		{"bad action", func(s *policy.Set) { s.SecurityPolicies[1].Spec.Rules[0].Action = "MAYBE" }},
		{"bad path", func(s *policy.Set) { s.SecurityPolicies[0].Spec.Rules[0].To[0].Paths = []string{"no-slash"} }},
		{"bad target kind", func(s *policy.Set) { s.SecurityPolicies[2].Spec.TargetRefs[0].Kind = "ConfigMap" }},
		{"bad TTL", func(s *policy.Set) {
			s.MeshConfig = &policy.MeshConfig{Name: "m", Spec: policy.MeshConfigSpec{CertificateTTL: "forever"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set := zeroTrustSet(nil)
			tt.mutate(set)
			if m, err := Compile(set); err == nil {
				t.Errorf("Compile = %v, want an error", m)
			}
		})
	}
}

// TestFailClosedPolicyCompiles: the policy policy.Evaluate serves in place
// of a rejected SecurityPolicy compiles to a deny of every request at its
// targets.
func TestFailClosedPolicyCompiles(t *testing.T) {
	t.Parallel()
	r := policy.Evaluate(policy.Input{Files: []policy.File{{Name: "p.yaml", Data: []byte(`apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: guard}
spec:
  targetRefs: [{kind: Service, name: orders}]
  rules:
  - action: ALOW
    from: [{namespaces: [shop]}]
`)}}})
	if r.Set == nil || len(r.Set.SecurityPolicies) != 1 || !r.Set.SecurityPolicies[0].FailClosed() {
		t.Fatalf("evaluation: %v", r.Errors)
	}
	m, err := Compile(r.Set)
	if err != nil {
		t.Fatal(err)
	}
	authz := m.Service("default", "orders").Authorization
	if authz == nil || len(authz.Deny) != 1 || len(authz.Deny[0].From)+len(authz.Deny[0].To) != 0 {
		t.Fatalf("authorization %+v: want one deny of every request", authz)
	}
}
