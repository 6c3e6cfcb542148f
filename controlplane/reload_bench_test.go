package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/xds"
	"github.com/meshgate/meshgate/policy"
)

// benchServices is the discovered catalog of the reload benchmarks: n
// services in namespace shop, two endpoints each (one a sidecar); endpoint
// is the host of the first endpoint of service n/2.
func benchServices(n int, endpoint string) []*model.DiscoveredService {
	out := make([]*model.DiscoveredService, 0, n)
	for i := range n {
		host := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		if i == n/2 {
			host = endpoint
		}
		name := fmt.Sprintf("svc-%d", i)
		out = append(out, &model.DiscoveredService{
			NamespacedName: model.NamespacedName{Namespace: "shop", Name: name},
			Source:         "consul:catalog/" + name, Port: 8080, Protocol: model.ProtocolHTTP,
			Endpoints: []*model.Endpoint{
				{Host: host, Port: 8080, Labels: map[string]string{"version": "v1"}},
				{Host: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080, Sidecar: true},
			},
		})
	}
	return out
}

// benchPolicy is the policy files of the reload benchmarks: a Gateway with
// one route per 10 services, and a SecurityPolicy per service.
func benchPolicy(n int) string {
	var b bytes.Buffer
	b.WriteString(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, protocol: HTTP, port: 8080}
`)
	for i := 0; i < n; i += 10 {
		fmt.Fprintf(&b, `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route-%d, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /svc-%d}}]
    backendRefs: [{name: svc-%d, port: 8080}]
`, i, i, i)
	}
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: svc-%d, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: svc-%d}]
  rules:
  - name: callers
    action: ALLOW
    from: [{services: ["svc-%d"], namespaces: [shop]}]
    to: [{methods: [GET, POST], paths: ["/api/*"]}]
`, i, i, (i+1)%n)
	}
	return b.String()
}

// benchControlPlane is a control plane with a fake discovery that reloads
// without serving (no listeners, no CA): what a reload costs before any
// proxy is translated.
func benchControlPlane(b *testing.B, n int) (*ControlPlane, *fakeDiscovery, string) {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(benchPolicy(n)), 0o644); err != nil {
		b.Fatal(err)
	}
	disc := newFakeDiscovery(benchServices(n, "10.9.9.1")...)
	disc.changed = func() {}
	logger := slog.New(slog.DiscardHandler)
	cache := policy.NewCache()
	cp := &ControlPlane{
		opts: Options{ConfigPaths: []string{dir}, Discovery: disc, Load: cache.LoadInput,
			DestructiveHold: DefaultDestructiveHold, Logger: logger},
		logger: logger, xds: xds.New(b.Context(), logger), policyCache: cache, servingCh: make(chan struct{}),
	}
	cp.discoverySynced.Store(true)
	if err := cp.reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	return cp, disc, dir
}

// BenchmarkReload measures one reload of a control plane with 1000
// discovered services and 1000 SecurityPolicies: after one discovered
// endpoint moved ("endpoint"), after a discovered service was added or
// removed ("service"), and after a policy file edit ("policy"). The
// service and policy changes cycle through three versions, so that no
// reload finds its input among the last two.
func BenchmarkReload(b *testing.B) {
	const n = 1000
	b.Run("endpoint", func(b *testing.B) {
		cp, disc, _ := benchControlPlane(b, n)
		// As the Consul watch publishes them: the unchanged services are
		// the same values in both snapshots.
		moved := slices.Clone(disc.services)
		moved[n/2] = benchServices(n, "10.9.9.2")[n/2]
		versions := [2][]*model.DiscoveredService{moved, disc.services}
		i := 0
		for b.Loop() {
			disc.services = versions[i%2]
			i++
			if err := cp.reload(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		cp, disc, _ := benchControlPlane(b, n)
		versions := [3][]*model.DiscoveredService{benchServices(n+1, "10.9.9.1"), benchServices(n+2, "10.9.9.1"), benchServices(n, "10.9.9.1")}
		i := 0
		for b.Loop() {
			disc.services = versions[i%3]
			i++
			if err := cp.reload(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("policy", func(b *testing.B) {
		cp, _, dir := benchControlPlane(b, n)
		base := benchPolicy(n)
		versions := [3]string{base + "---\n# edited\n", base + "---\n# edited again\n", base}
		i := 0
		for b.Loop() {
			b.StopTimer()
			if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(versions[i%3]), 0o644); err != nil {
				b.Fatal(err)
			}
			i++
			b.StartTimer()
			if err := cp.reload(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
