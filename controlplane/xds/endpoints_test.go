package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/policy"
)

// meshSet is a policy with a gateway routing to orders, a mesh route on
// payments, orders behind sidecars (two ports) and payments not.
func meshSet() *policy.Set {
	gw := &policy.Gateway{}
	gw.Name = "edge"
	gw.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType}}
	port := int32(80)
	edge := &policy.HTTPRoute{}
	edge.Name = "web"
	edge.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
	edge.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Port: &port},
	}}}}}
	kind, group := gwapiv1.Kind("Service"), gwapiv1.Group("")
	mesh := &policy.HTTPRoute{}
	mesh.Name = "payments-split"
	mesh.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "payments", Kind: &kind, Group: &group}}
	mesh.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: "payments", Port: &port},
	}}}}}
	return &policy.Set{
		Gateways:   []*policy.Gateway{gw},
		HTTPRoutes: []*policy.HTTPRoute{edge, mesh},
		Services: []*policy.Service{
			{Name: "orders", Spec: policy.ServiceSpec{
				Ports: []policy.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090, Protocol: policy.ProtocolHTTP2}},
				Endpoints: []policy.Endpoint{
					{Address: "127.0.0.1:21011", Port: "http", Sidecar: true, Labels: map[string]string{"version": "v1"}},
					{Address: "127.0.0.2:21011", Port: "http", Sidecar: true, Labels: map[string]string{"version": "v2"}},
					{Address: "127.0.0.1:21012", Port: "grpc", Sidecar: true},
				},
			}},
			{Name: "payments", Spec: policy.ServiceSpec{
				Ports:     []policy.ServicePort{{Port: 80}},
				Endpoints: []policy.Endpoint{{Address: "127.0.0.1:22011"}},
			}},
		},
	}
}

var meshNodes = map[string]xdsnode.Metadata{
	"gw":         {Role: xdsnode.RoleGateway, Gateway: "edge"},
	"orders-1":   {Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"},
	"payments-1": {Role: xdsnode.RoleSidecar, Service: "payments", InboundAddress: "127.0.0.1:22011", AppAddress: "127.0.0.1:9001"},
	"other-ns":   {Role: xdsnode.RoleSidecar, Service: "billing", Namespace: "finance"},
}

func compileSet(t *testing.T, set *policy.Set) *model.Model {
	t.Helper()
	m, err := model.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// serverWithNodes serves m (with a trust bundle: mTLS on) to meshNodes.
func serverWithNodes(t *testing.T, m *model.Model) *Server {
	t.Helper()
	s := New(t.Context(), nil)
	s.SetTrustBundle(t.Context(), []byte("-----BEGIN CERTIFICATE-----\nTUVTSEdBVEU=\n-----END CERTIFICATE-----\n"))
	s.SetModel(t.Context(), m)
	streamID := int64(0)
	for id, meta := range meshNodes {
		streamID++
		req := &discoveryv3.DiscoveryRequest{Node: testNode(t, id, meta), TypeUrl: resourcev3.ClusterType}
		if err := s.onStreamRequest(streamID, req); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestEndpointOnlyChangeTakesFastPathAndEqualsFullTranslation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*policy.Set)
		// fast: only endpoints differ; changed: the clusters expected to
		// get a new load assignment.
		fast    bool
		changed []string
	}{
		{name: "same policy", change: func(*policy.Set) {}, fast: true},
		{name: "endpoint moves", fast: true, changed: []string{"default/payments:80"},
			change: func(s *policy.Set) { s.Services[1].Spec.Endpoints[0].Address = "127.0.0.9:22011" }},
		{name: "endpoint added", fast: true, changed: []string{"default/payments:80"},
			change: func(s *policy.Set) {
				s.Services[1].Spec.Endpoints = append(s.Services[1].Spec.Endpoints, policy.Endpoint{Address: "127.0.0.3:22011"})
			}},
		{name: "every endpoint removed", fast: true, changed: []string{"default/payments:80"},
			change: func(s *policy.Set) { s.Services[1].Spec.Endpoints = nil }},
		{name: "label changes", fast: true, changed: []string{"default/orders:80"},
			change: func(s *policy.Set) { s.Services[0].Spec.Endpoints[1].Labels = map[string]string{"version": "v3"} }},
		{name: "one of two sidecar endpoints no longer a sidecar", fast: true, changed: []string{"default/orders:80"},
			change: func(s *policy.Set) { s.Services[0].Spec.Endpoints[1].Sidecar = false }},
		{name: "last sidecar endpoint of a port no longer a sidecar", fast: false,
			change: func(s *policy.Set) { s.Services[0].Spec.Endpoints[2].Sidecar = false }},
		{name: "first sidecar endpoint of a port", fast: false,
			change: func(s *policy.Set) { s.Services[1].Spec.Endpoints[0].Sidecar = true }},
		{name: "service port changes", fast: false,
			change: func(s *policy.Set) { s.Services[1].Spec.Ports[0].Port = 81 }},
		{name: "route changes", fast: false,
			change: func(s *policy.Set) { s.HTTPRoutes[0].Spec.Hostnames = []gwapiv1.Hostname{"shop.example"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := compileSet(t, meshSet())
			set := meshSet()
			tt.change(set)
			after := compileSet(t, set)
			changed, ok := after.EndpointChanges(before)
			if ok != tt.fast || !slices.Equal(changed, tt.changed) {
				t.Fatalf("EndpointChanges = %v, %v; want %v, %v", changed, ok, tt.changed, tt.fast)
			}

			s := serverWithNodes(t, before)
			counts := s.UpdateCounts()
			s.SetModel(t.Context(), after)
			got := s.UpdateCounts()
			if fast := got.EndpointsOnly == counts.EndpointsOnly+1 && got.Full == counts.Full; fast != tt.fast {
				t.Errorf("update counts %+v -> %+v: fast path %v, want %v", counts, got, fast, tt.fast)
			}

			// What the nodes now have equals what a server given the new
			// model from the start serves them.
			want := serverWithNodes(t, after)
			for id := range meshNodes {
				gotRes, gotVersion, _ := s.Resources(id)
				wantRes, wantVersion, _ := want.Resources(id)
				if gotVersion != wantVersion {
					t.Errorf("node %s: version %s, want %s", id, gotVersion, wantVersion)
				}
				assertSameMessages(t, id, gotRes.Messages(), wantRes.Messages())
				fresh, err := translate.NewCache(after, translate.Inputs{TrustBundle: s.bundle}).Translate(want.nodes[id].info)
				if err != nil {
					t.Fatal(err)
				}
				assertSameMessages(t, id, gotRes.Messages(), fresh.Messages())
				gotSnap, wantSnap := snapshotContent(s, id), snapshotContent(want, id)
				if !slices.Equal(gotSnap, wantSnap) {
					t.Errorf("node %s: snapshot\n%v\nwant\n%v", id, gotSnap, wantSnap)
				}
			}
		})
	}
}

func assertSameMessages(t *testing.T, id string, got, want []proto.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("node %s: %d resources, want %d", id, len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("node %s: resource %d\n%v\nwant\n%v", id, i, got[i], want[i])
		}
	}
}

// snapshotContent lists a node's cached snapshot: per type its version,
// then each resource's name and content hash.
func snapshotContent(s *Server, id string) []string {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	snap := s.cache.nodes[id].snap
	var out []string
	for _, typeURL := range versionedTypes {
		ts := snap.types[typeURL]
		out = append(out, typeURL+" "+ts.version)
		for _, e := range ts.list {
			out = append(out, "  "+e.name+" "+e.hash)
		}
	}
	return out
}

// An endpoint-only change reaches a subscribed stream as the one changed
// load assignment, and nothing else is resent.
func TestEndpointOnlyChangeSendsOnlyTheChangedAssignment(t *testing.T) {
	t.Parallel()
	// A response that never comes fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := New(ctx, nil)
	s.SetModel(ctx, compileSet(t, meshSet()))
	conn := startServer(t, s)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: testNode(t, "payments-1", meshNodes["payments-1"])}
	c.request(resourcev3.ClusterType, nil, nil, "")
	clusters := c.receive(resourcev3.ClusterType)
	c.request(resourcev3.ClusterType, nil, clusters, "")
	subscribed := []string{"default/orders:80", "default/orders:9090", "default/payments:80"}
	c.request(resourcev3.EndpointType, subscribed, nil, "")
	first := c.receive(resourcev3.EndpointType)
	if len(first.Resources) != len(subscribed) {
		t.Fatalf("first EDS response: %d assignments, want %d", len(first.Resources), len(subscribed))
	}
	c.request(resourcev3.EndpointType, subscribed, first, "")

	set := meshSet()
	set.Services[1].Spec.Endpoints[0].Address = "127.0.0.9:22011"
	s.SetModel(ctx, compileSet(t, set))
	second := c.receive(resourcev3.EndpointType) // a CDS response would fail here
	if len(second.Resources) != 1 || second.VersionInfo == first.VersionInfo {
		t.Fatalf("second EDS response: %d assignments, version %s (first %s); want 1, a new version",
			len(second.Resources), second.VersionInfo, first.VersionInfo)
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := second.Resources[0].UnmarshalTo(cla); err != nil {
		t.Fatal(err)
	}
	addr := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
	if cla.ClusterName != "default/payments:80" || addr != "127.0.0.9" {
		t.Errorf("assignment %s to %s, want default/payments:80 to 127.0.0.9", cla.ClusterName, addr)
	}
	if counts := s.UpdateCounts(); counts.EndpointsOnly != 1 {
		t.Errorf("update counts %+v: want one endpoint-only update", counts)
	}
}
