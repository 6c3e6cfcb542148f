package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestGeneratedPolicyLoads proves the generated files are a valid policy of
// the expected size, before and after each change.
func TestGeneratedPolicyLoads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		services     int
		withAdded    bool
		endpointGen  int
		wantServices int
		wantRoutes   int
	}{
		{"initial", 25, false, 0, 25, 25 + 3},
		{"policy change", 25, true, 0, 26, 26 + 3},
		{"endpoint change", 25, true, 1, 26, 26 + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			files := generatePolicy(tt.services, tt.withAdded, tt.endpointGen)
			for name, body := range map[string]string{"services.yaml": files.services, "routes.yaml": files.routes} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
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
		})
	}
}
