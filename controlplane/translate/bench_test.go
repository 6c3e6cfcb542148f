package translate

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// benchModel compiles n services in namespace shop (two endpoints each, one
// a sidecar), a Gateway with a route per 10 services and a SecurityPolicy
// per service.
func benchModel(b *testing.B, n int) *model.Model {
	b.Helper()
	var doc strings.Builder
	doc.WriteString("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: shop}\n" +
		"spec:\n  gatewayClassName: meshgate\n  listeners:\n  - {name: http, protocol: HTTP, port: 8080}\n")
	for i := range n {
		fmt.Fprintf(&doc, "---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: svc-%d, namespace: shop}\n"+
			"spec:\n  ports: [{port: 8080}]\n  endpoints:\n  - {address: \"10.0.%d.%d:8080\", labels: {version: v1}}\n  - {address: \"10.1.%d.%d:8080\", sidecar: true}\n",
			i, i/250, i%250+1, i/250, i%250+1)
		fmt.Fprintf(&doc, "---\napiVersion: meshgate.dev/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: svc-%d, namespace: shop}\n"+
			"spec:\n  targetRefs: [{kind: Service, name: svc-%d}]\n  rules:\n  - {action: ALLOW, from: [{services: [svc-%d]}], to: [{paths: [\"/api/*\"]}]}\n",
			i, i, (i+1)%n)
		if i%10 == 0 {
			fmt.Fprintf(&doc, "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: route-%d, namespace: shop}\n"+
				"spec:\n  parentRefs: [{name: edge}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /svc-%d}}]\n    backendRefs: [{name: svc-%d, port: 8080}]\n",
				i, i, i)
		}
	}
	set, err := policy.LoadFiles(policy.File{Name: "bench.yaml", Data: []byte(doc.String())})
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkTranslateAll translates one model for 1000 sidecars (one per
// service) and 20 gateway nodes, sharing what does not depend on the node,
// as the xDS server does on every policy change.
func BenchmarkTranslateAll(b *testing.B) {
	const n = 1000
	m := benchModel(b, n)
	var nodes []NodeInfo
	for i := range 20 {
		nodes = append(nodes, NodeInfo{ID: fmt.Sprintf("gateway~edge~%d", i), Role: RoleGateway, Namespace: "shop", Gateway: "edge"})
	}
	for i, svc := range m.Services {
		nodes = append(nodes, NodeInfo{ID: "sidecar~" + svc.Name, Role: RoleSidecar, Namespace: "shop", Service: svc.Name,
			InboundAddress: fmt.Sprintf("10.1.%d.%d:8080", i/250, i%250+1), AppAddress: "127.0.0.1:9000", OutboundAddress: DefaultOutboundAddress})
	}
	bundle, err := os.ReadFile(goldenCA)
	if err != nil {
		b.Fatal(err)
	}
	in := Inputs{TrustBundle: bundle}
	for b.Loop() {
		shared := NewCache(m, in)
		for _, node := range nodes {
			if _, err := shared.Translate(node); err != nil {
				b.Fatal(err)
			}
		}
	}
}
