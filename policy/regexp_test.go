package policy

import (
	"strings"
	"testing"
)

// TestCheckRegexpLimits: policy refuses the regular expressions the proxies
// would NACK (api/regexlimit), with a short message.
func TestCheckRegexpLimits(t *testing.T) {
	cases := []struct {
		re, want string
	}{
		{"/orders/[0-9]+", ""},
		{strings.Repeat("a{1000}", 25), "regex program too large"},
		{strings.Repeat("a", 20<<10), "regex longer than the limit"},
		{"(unclosed", "invalid regular expression"},
	}
	for _, tc := range cases {
		got := checkRegexp(tc.re)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("checkRegexp(%.20q) = %q, want %q", tc.re, got, tc.want)
		}
		if len(got) > 200 {
			t.Errorf("message of %d bytes quotes the whole regex", len(got))
		}
	}
}

// TestGatewayServiceNameClash: a Gateway and a Service of one namespace and
// name would share a SPIFFE identity, so the pair is refused.
func TestGatewayServiceNameClash(t *testing.T) {
	_, err := LoadFiles(File{Name: "clash.yaml", Data: []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: x
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: edge}
spec:
  ports: [{port: 80}]
`)})
	want := `clash.yaml:3: metadata.name: Gateway "edge" has the name of a Service (clash.yaml:8)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("LoadFiles = %v, want an error containing %q", err, want)
	}
}
