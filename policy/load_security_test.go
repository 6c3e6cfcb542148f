package policy

import (
	"testing"
)

// TestLoadZeroTrust loads a MeshConfig and SecurityPolicies of every target
// kind and checks what the loader keeps.
func TestLoadZeroTrust(t *testing.T) {
	t.Parallel()
	set, err := Load("testdata/zerotrust")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	mc := set.MeshConfig
	if mc == nil {
		t.Fatal("MeshConfig is nil")
	}
	if mc.Namespace != "meshgate-system" || mc.Spec.TrustDomain != "example.org" || mc.Spec.MTLS.Mode != MTLSPermissive ||
		mc.Spec.DefaultAction != ActionDeny || mc.Spec.CertificateTTL != "1h" {
		t.Errorf("MeshConfig = %+v", mc)
	}
	if mc.Source.Line != 1 || mc.Source.LineOf("spec.certificateTTL") != 10 {
		t.Errorf("MeshConfig source = %+v, certificateTTL line %d", mc.Source, mc.Source.LineOf("spec.certificateTTL"))
	}
	if len(set.SecurityPolicies) != 2 || set.SecurityPolicies[0].Name != "edge" || set.SecurityPolicies[1].Name != "orders-callers" {
		t.Fatalf("SecurityPolicies = %v, want edge and orders-callers in order", set.SecurityPolicies)
	}
	sp := set.SecurityPolicies[1]
	if len(sp.Spec.Rules) != 2 || sp.Spec.Rules[0].Name != "no-admin" || sp.Spec.Rules[1].Action != ActionAllow {
		t.Fatalf("rules = %+v", sp.Spec.Rules)
	}
	from := sp.Spec.Rules[1].From
	if len(from) != 4 || len(from[0].Services) != 4 || from[3].IPBlocks[2] != "::1" {
		t.Errorf("from = %+v", from)
	}
	to := sp.Spec.Rules[1].To
	if len(to) != 1 || len(to[0].Paths) != 4 || to[0].Headers[0] != (RuleHeader{Name: "x-env", Value: "prod"}) {
		t.Errorf("to = %+v", to)
	}
	edge := set.SecurityPolicies[0]
	if g := edge.Spec.TargetRefs[0].Group; g == nil || *g != GatewayGroup || edge.Spec.TargetRefs[1].Group != nil {
		t.Errorf("target groups = %+v", edge.Spec.TargetRefs)
	}
	svc := set.LookupService("default", "orders")
	if svc == nil || !svc.Spec.Endpoints[0].Sidecar || svc.Spec.Endpoints[1].Sidecar {
		t.Errorf("orders endpoints = %+v, want the first a sidecar", svc)
	}
}

func TestCheckPathPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/*", true},
		{"/orders", true},
		{"/orders/", true},
		{"/orders/*", true},
		{"/a/*/b", true},
		{"/a/x*y/b", true},
		{"/a/**", true},
		{"/**/b", true},
		{"orders", false},
		{"", false},
		{"/a//b", false},
		{"/a/**x", false},
		{"/a/b?c", false},
		{"/a/./b", false},
		{"/a/b c", false},
	}
	for _, tt := range tests {
		if got := CheckPathPattern(tt.path) == ""; got != tt.ok {
			t.Errorf("CheckPathPattern(%q) ok = %v, want %v (%s)", tt.path, got, tt.ok, CheckPathPattern(tt.path))
		}
	}
}

func TestParseIPBlock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"127.0.0.1", "127.0.0.1/32"},
		{"::1", "::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"10.0.0.1/8", ""},
		{"10.0.0.0/33", ""},
		{"host", ""},
		{"", ""},
	}
	for _, tt := range tests {
		p, msg := ParseIPBlock(tt.in)
		got := ""
		if msg == "" {
			got = p.String()
		}
		if got != tt.want {
			t.Errorf("ParseIPBlock(%q) = %q (%s), want %q", tt.in, got, msg, tt.want)
		}
	}
}
