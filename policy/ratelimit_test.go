package policy

import (
	"strings"
	"testing"
)

// TestGlobalRateLimitService: a global limit is accepted with a MeshConfig
// rateLimitService, whose address and timeout are checked.
func TestGlobalRateLimitService(t *testing.T) {
	t.Parallel()
	global := trafficPolicy(`[{kind: Gateway, name: edge}]`, "  rateLimit: {global: {failureMode: Deny, rules: [{limit: {requests: 100, unit: Minute}, key: {clientIP: {}}}]}}\n")
	for _, tc := range []struct {
		name, service string
		want          []string
	}{
		{"service", "{address: \"127.0.0.1:8089\", timeout: 250ms}", nil},
		{"bad service", "{address: localhost, timeout: 1h}", []string{`spec.rateLimitService.address: "localhost": want host:port`, "spec.rateLimitService.timeout: 1h: at most 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mesh := "apiVersion: meshgate.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  rateLimitService: " + tc.service + "\n"
			set, err := LoadFiles(File{Name: "base.yaml", Data: []byte(trafficBase)}, File{Name: "mesh.yaml", Data: []byte(mesh)},
				File{Name: "tp.yaml", Data: []byte(global)})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if set.MeshConfig.Spec.RateLimitService.Address != "127.0.0.1:8089" || set.TrafficPolicies[0].Spec.RateLimit.Global.FailureMode != RateLimitFailDeny {
					t.Errorf("loaded %+v, %+v", set.MeshConfig.Spec, set.TrafficPolicies[0].Spec.RateLimit)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("errors %v, want one containing %q", err, w)
				}
			}
		})
	}
}
