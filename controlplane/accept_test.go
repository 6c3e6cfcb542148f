package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

const acceptGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 18080, protocol: HTTP}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:21011"}]
`

// acceptRoute is a route of edge sending path to orders; filter is a
// filter type for its rule, or "".
func acceptRoute(name, path, filter string) string {
	filters := ""
	if filter != "" {
		filters = fmt.Sprintf("    filters: [{type: %s}]\n", filter)
	}
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %s}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: PathPrefix, value: %s}}]
%s    backendRefs: [{name: orders, port: 80}]
`, name, path, filters)
}

// routePaths lists the path prefixes of the rules of the gateway edge, by
// route name.
func routePaths(m *model.Model) map[string]string {
	out := map[string]string{}
	for _, g := range m.Gateways {
		for _, p := range g.Ports {
			for _, vh := range p.VirtualHosts {
				for _, r := range vh.Rules {
					out[r.Route.Name] = r.Match.Path.Value
				}
			}
		}
	}
	return out
}

// TestReloadServesTheValidResources: a reload whose policy has one invalid
// route still pushes the change of the valid one; the invalid one serves
// its last good version.
func TestReloadServesTheValidResources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		writeAtomically(t, filepath.Join(dir, name), content)
	}
	write("gateway.yaml", acceptGateway)
	write("a.yaml", acceptRoute("a", "/a", ""))
	write("b.yaml", acceptRoute("b", "/b", ""))
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := New(ctx, Options{ConfigPaths: []string{dir}, XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		DataDir: t.TempDir(), Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	cp.opts.OnReady = func(net.Addr, net.Addr) { ready.Store(true) }
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "ready", func() bool { return ready.Load() })
	waitFor(t, "both routes", func() bool {
		p := routePaths(cp.model.Load())
		return p["a"] == "/a" && p["b"] == "/b"
	})

	// One edit: a moves to /a2, b gets an invalid filter.
	write("a.yaml", acceptRoute("a", "/a2", ""))
	write("b.yaml", acceptRoute("b", "/b2", "Nope"))
	waitFor(t, "a's change", func() bool { return routePaths(cp.model.Load())["a"] == "/a2" })
	if p := routePaths(cp.model.Load()); p["b"] != "/b" {
		t.Errorf("route b serves %q, want its last good version /b", p["b"])
	}
	st := cp.status()
	if st.RejectedResources != 1 || len(st.Errors) != 1 {
		t.Errorf("status: %d rejected, errors %q; want 1, 1", st.RejectedResources, st.Errors)
	}

	// b's file deleted: b is gone.
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b deleted", func() bool { _, ok := routePaths(cp.model.Load())["b"]; return !ok })
	if st := cp.status(); st.RejectedResources != 0 || st.LastError != "" {
		t.Errorf("status after the deletion: %d rejected, last error %q", st.RejectedResources, st.LastError)
	}
}

// TestResourcesEndpoint: GET /resources filters by kind (any form the CLI
// accepts) and finds one resource, the namespace of a cluster-scoped kind
// ignored.
func TestResourcesEndpoint(t *testing.T) {
	t.Parallel()
	cp := &ControlPlane{result: policy.Evaluate(policy.Input{Files: []policy.File{{Name: "p.yaml", Data: []byte(acceptGateway +
		"---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: meshgate}\nspec: {controllerName: meshgate.dev/controller}\n")}}})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /resources", cp.handleResources)
	mux.HandleFunc("GET /resources/{kind}/{namespace}/{name}", cp.handleResources)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, tt := range []struct {
		path, want string
		code       int
	}{
		{"/resources", `"kind": "GatewayClass"`, http.StatusOK},
		{"/resources?kind=gw", `"name": "edge"`, http.StatusOK},
		{"/resources?kind=nope", "unknown kind", http.StatusBadRequest},
		{"/resources/gatewayclass/default/meshgate", `"state": "Accepted"`, http.StatusOK},
		{"/resources/svc/default/orders", `"kind": "Service"`, http.StatusOK},
		{"/resources/svc/shop/orders", "not found", http.StatusNotFound},
	} {
		code, body := get(tt.path)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d %s; want %d with %q", tt.path, code, body, tt.code, tt.want)
		}
	}
	if _, body := get("/resources?kind=gw"); strings.Contains(body, `"kind": "Service"`) {
		t.Errorf("?kind=gw lists other kinds: %s", body)
	}
}
