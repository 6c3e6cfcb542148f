package xdsnode

import "testing"

func TestIDPrefix(t *testing.T) {
	cases := []struct{ role, name, ns, want string }{
		{"sidecar", "orders", "", "sidecar~orders~"},
		{"sidecar", "orders", "default", "sidecar~orders~"},
		{"gateway", "edge", "prod", "gateway~edge.prod~"},
	}
	for _, tc := range cases {
		if got := IDPrefix(tc.role, tc.name, tc.ns); got != tc.want {
			t.Errorf("IDPrefix(%s, %s, %s) = %q, want %q", tc.role, tc.name, tc.ns, got, tc.want)
		}
	}
}
