package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

func ptr[T any](v T) *T { return &v }

// builtSet is a hand-built set, compiled without policy validation: it
// references a backend that does not exist (a 500), which a policy file
// could not.
func builtSet() *policy.Set {
	gw := &policy.Gateway{}
	gw.Name = "edge"
	gw.Spec.Listeners = []gwapiv1.Listener{
		{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType},
		{Name: "shop", Port: 8080, Protocol: gwapiv1.HTTPProtocolType, Hostname: ptr(gwapiv1.Hostname("shop.example.com"))},
	}
	exact := gwapiv1.PathMatchExact
	prefix := gwapiv1.PathMatchPathPrefix
	r := &policy.HTTPRoute{}
	r.Name = "shop"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
	backend := func(name string, port int32, weight int32) gwapiv1.HTTPBackendRef {
		return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
			BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(name), Port: &port},
			Weight:                 &weight,
		}}
	}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{
		{
			Matches:     []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &prefix, Value: ptr("/orders/")}}},
			BackendRefs: []gwapiv1.HTTPBackendRef{backend("orders", 80, 90), backend("orders-v2", 80, 10)},
			Filters: []gwapiv1.HTTPRouteFilter{{
				Type:                   gwapiv1.HTTPRouteFilterResponseHeaderModifier,
				ResponseHeaderModifier: &gwapiv1.HTTPHeaderFilter{Set: []gwapiv1.HTTPHeader{{Name: "X-Served-By", Value: "edge"}}},
			}},
		},
		{
			Matches:     []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &exact, Value: ptr("/missing")}}},
			BackendRefs: []gwapiv1.HTTPBackendRef{backend("nowhere", 80, 1)},
		},
		{BackendRefs: []gwapiv1.HTTPBackendRef{backend("orders", 80, 1)}},
	}
	svc := func(name, addr, version string) *policy.Service {
		return &policy.Service{Name: name, Spec: policy.ServiceSpec{
			Ports:     []policy.ServicePort{{Name: "http", Port: 80}},
			Endpoints: []policy.Endpoint{{Address: addr, Labels: map[string]string{"version": version}}},
		}}
	}
	return &policy.Set{
		Gateways:   []*policy.Gateway{gw},
		HTTPRoutes: []*policy.HTTPRoute{r},
		Services:   []*policy.Service{svc("orders", "127.0.0.1:21011", "v1"), svc("orders-v2", "127.0.0.1:21012", "v2")},
	}
}

// nodesFor returns a gateway node per Gateway and a sidecar node per Service,
// plus nodes that must get nothing.
func nodesFor(m *model.Model) []NodeInfo {
	nodes := []NodeInfo{
		{ID: "unknown-role", Role: "router", Namespace: "default"},
		{ID: "gateway~absent", Role: RoleGateway, Namespace: "default", Gateway: "absent"},
	}
	for _, gw := range m.Gateways {
		nodes = append(nodes, NodeInfo{ID: "gateway~" + gw.Namespace + "~" + gw.Name, Role: RoleGateway, Namespace: gw.Namespace, Gateway: gw.Name})
	}
	for i, svc := range m.Services {
		nodes = append(nodes, NodeInfo{
			ID: "sidecar~" + svc.Namespace + "~" + svc.Name, Role: RoleSidecar, Namespace: svc.Namespace, Service: svc.Name,
			InboundAddress:  fmt.Sprintf("127.0.0.1:%d", 31000+i),
			AppAddress:      fmt.Sprintf("127.0.0.1:%d", 32000+i),
			OutboundAddress: fmt.Sprintf("127.0.0.1:%d", 33000+i),
		})
	}
	return nodes
}

type validator interface{ Validate() error }

// validateAll runs the generated Validate of every resource and of the typed
// configs nested in Any fields.
func validateAll(t *testing.T, res *Resources) {
	t.Helper()
	for _, msg := range res.Messages() {
		if err := msg.(validator).Validate(); err != nil {
			t.Errorf("%T: %v", msg, err)
		}
		validateNested(t, msg.ProtoReflect())
	}
	for _, l := range res.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				if f.GetName() == tcpProxyName || f.GetName() == networkRBACName {
					continue // validated whole by validateNested
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Errorf("listener %s: %v", l.Name, err)
					continue
				}
				if err := hcm.Validate(); err != nil {
					t.Errorf("listener %s: connection manager: %v", l.Name, err)
				}
			}
		}
	}
	for _, c := range res.Clusters {
		for name, opt := range c.TypedExtensionProtocolOptions {
			po := &upstreamhttpv3.HttpProtocolOptions{}
			if err := opt.UnmarshalTo(po); err != nil {
				t.Errorf("cluster %s %s: %v", c.Name, name, err)
			} else if err := po.Validate(); err != nil {
				t.Errorf("cluster %s %s: %v", c.Name, name, err)
			}
		}
	}
}

// TestValidateExamples translates the shipped examples for every node (no
// golden: the examples belong to the docs and change with them).
func TestValidateExamples(t *testing.T) {
	t.Parallel()
	set, err := policy.Load(filepath.Join("..", "..", "examples", "quickstart"))
	if err != nil {
		t.Fatalf("policy.Load: %v", err)
	}
	m, err := model.Compile(set)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	for _, node := range nodesFor(m) {
		res, err := Translate(m, Inputs{}, node)
		if err != nil {
			t.Fatalf("Translate(%s): %v", node.ID, err)
		}
		validateAll(t, res)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	m, err := model.Compile(builtSet())
	if err != nil {
		t.Fatal(err)
	}
	node := NodeInfo{ID: "g", Role: RoleGateway, Namespace: "default", Gateway: "edge"}
	var first []byte
	for range 20 {
		res, err := Translate(m, Inputs{}, node)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(first, b) {
			t.Fatal("two translations of one model differ")
		}
	}
}

func TestGatewayShape(t *testing.T) {
	t.Parallel()
	m, err := model.Compile(builtSet())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Translate(m, Inputs{}, NodeInfo{ID: "g", Role: RoleGateway, Namespace: "default", Gateway: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Listeners) != 1 || res.Listeners[0].Name != "default/edge/8080" {
		t.Fatalf("listeners = %v", res.Listeners)
	}
	if got := res.Listeners[0].Address.GetSocketAddress(); got.Address != "127.0.0.1" || got.GetPortValue() != 8080 {
		t.Errorf("listener address = %v", got)
	}
	rc := res.Routes[0]
	var domains []string
	for _, vh := range rc.VirtualHosts {
		domains = append(domains, vh.Domains...)
	}
	if fmt.Sprint(domains) != "[* shop.example.com]" {
		t.Errorf("domains = %v", domains)
	}
	routes := rc.VirtualHosts[0].Routes
	if len(routes) != 4 {
		t.Fatalf("routes = %d, want 4", len(routes))
	}
	if routes[0].Match.GetPath() != "/missing" || routes[0].GetDirectResponse().GetStatus() != 500 {
		t.Errorf("unresolved backend route = %v", routes[0])
	}
	// PathPrefix /orders: the path itself, then what is under it.
	if routes[1].Match.GetPath() != "/orders" || len(routes[1].GetRoute().GetWeightedClusters().GetClusters()) != 2 {
		t.Errorf("canary route = %v", routes[1])
	}
	if routes[2].Match.GetPrefix() != "/orders/" || !proto.Equal(routes[2].GetRoute(), routes[1].GetRoute()) {
		t.Errorf("canary route under /orders/ = %v", routes[2])
	}
	if routes[3].Match.GetPrefix() != "/" || routes[3].GetRoute().GetCluster() != "default/orders:80" {
		t.Errorf("default route = %v", routes[3])
	}
	var clusters []string
	for _, c := range res.Clusters {
		clusters = append(clusters, c.Name)
	}
	if fmt.Sprint(clusters) != "[default/orders-v2:80 default/orders:80]" || len(res.Endpoints) != 2 {
		t.Errorf("clusters = %v, endpoints %d", clusters, len(res.Endpoints))
	}
	labels := res.Endpoints[1].Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["meshgate"]
	if got := labels.GetFields()["version"].GetStringValue(); got != "v1" {
		t.Errorf("endpoint label version = %q", got)
	}
}

func TestSidecarShape(t *testing.T) {
	t.Parallel()
	set := builtSet()
	set.Services = append(set.Services, &policy.Service{Name: "orders", Namespace: "billing", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Port: 9090, Protocol: policy.ProtocolHTTP2}},
	}})
	m, err := model.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Translate(m, Inputs{}, NodeInfo{
		ID: "s", Role: RoleSidecar, Namespace: "default", Service: "orders",
		InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000", OutboundAddress: "127.0.0.1:15001",
	})
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	var names []string
	for _, l := range res.Listeners {
		names = append(names, fmt.Sprintf("%s:%s", l.Name, l.TrafficDirection))
	}
	if fmt.Sprint(names) != "[inbound:INBOUND outbound:OUTBOUND]" {
		t.Errorf("listeners = %v", names)
	}
	inbound := res.Clusters[slices.IndexFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == "inbound|orders" })]
	ep := inbound.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress()
	if inbound.GetType().String() != "STATIC" || ep.Address != "127.0.0.1" || ep.GetPortValue() != 9000 {
		t.Errorf("inbound cluster = %v", inbound)
	}
	outbound := res.Routes[slices.IndexFunc(res.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.Name == "outbound" })]
	got := map[string][]string{}
	for _, vh := range outbound.VirtualHosts {
		got[vh.Name] = vh.Domains
	}
	want := map[string][]string{
		"billing/orders:9090":  {"orders.billing", "orders.billing:9090"},
		"default/orders:80":    {"orders", "orders:80", "orders.default", "orders.default:80"},
		"default/orders-v2:80": {"orders-v2", "orders-v2:80", "orders-v2.default", "orders-v2.default:80"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outbound virtual hosts = %v, want %v", got, want)
	}
	h2 := res.Clusters[slices.IndexFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == "billing/orders:9090" })]
	if _, ok := h2.TypedExtensionProtocolOptions[httpProtocolOptionsName]; !ok {
		t.Errorf("HTTP2 cluster has no protocol options: %v", h2)
	}
}

func TestNodeInfoFromNode(t *testing.T) {
	t.Parallel()
	meta := xdsnode.Metadata{Role: xdsnode.RoleSidecar, InboundAddress: "127.0.0.1:1", AppAddress: "127.0.0.1:2"}.Struct()
	got := NodeInfoFromNode(&corev3.Node{Id: "sidecar~orders~h-1", Cluster: "orders", Metadata: meta})
	want := NodeInfo{ID: "sidecar~orders~h-1", Role: RoleSidecar, Namespace: "default", Service: "orders",
		InboundAddress: "127.0.0.1:1", AppAddress: "127.0.0.1:2", OutboundAddress: DefaultOutboundAddress}
	if got != want {
		t.Errorf("NodeInfoFromNode = %+v, want %+v", got, want)
	}
	if got := NodeInfoFromNode(nil); got.Role != "" || got.Namespace != "default" {
		t.Errorf("NodeInfoFromNode(nil) = %+v", got)
	}
	if _, err := Translate(&model.Model{}, Inputs{}, NodeInfo{Role: RoleSidecar, Service: "x", OutboundAddress: "nonsense"}); err == nil {
		t.Error("Translate with a malformed outbound_address: want an error")
	}
}

// validateNested runs the generated Validate of every message packed in an
// Any anywhere inside m (typed filter configs, transport sockets, per-route
// configs), recursively.
func validateNested(t *testing.T, m protoreflect.Message) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("Any %s: %v", a.TypeUrl, err)
			return
		}
		if v, ok := inner.(validator); ok {
			if err := v.Validate(); err != nil {
				t.Errorf("%s: %v", a.TypeUrl, err)
			}
		}
		validateNested(t, inner.ProtoReflect())
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				validateNested(t, v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				validateNested(t, mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			validateNested(t, v.Message())
		}
		return true
	})
}

func compact(m proto.Message) string {
	// The text format inserts random spaces: compare without any.
	return strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(m)), "")
}

// TestMeshSectionName: a mesh route whose Service parentRef has a
// sectionName (the Service's port name) shapes the outbound virtual host of
// that port only; the others keep their one route to their cluster. (The
// policy loader does not accept sectionName on a Service parent yet: the set
// is built directly.)
func TestMeshSectionName(t *testing.T) {
	t.Parallel()
	svc := &policy.Service{Name: "orders", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Name: "http", Port: 80}, {Name: "admin", Port: 9000}},
	}}
	r := &policy.HTTPRoute{}
	r.Name = "admin-redirect"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Group: ptr(gwapiv1.Group("")), Kind: ptr(gwapiv1.Kind("Service")), Name: "orders", SectionName: ptr(gwapiv1.SectionName("admin"))}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{Filters: []gwapiv1.HTTPRouteFilter{{
		Type: gwapiv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwapiv1.HTTPRequestRedirectFilter{Hostname: ptr(gwapiv1.PreciseHostname("admin.example"))},
	}}}}
	m, err := model.Compile(&policy.Set{Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Translate(m, Inputs{}, NodeInfo{ID: "s", Role: RoleSidecar, Namespace: "default", Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	outbound := res.Routes[slices.IndexFunc(res.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.Name == "outbound" })]
	got := map[string]string{}
	for _, vh := range outbound.VirtualHosts {
		if len(vh.Routes) != 1 {
			t.Fatalf("%s: %d routes, want 1", vh.Name, len(vh.Routes))
		}
		if rd := vh.Routes[0].GetRedirect(); rd != nil {
			got[vh.Name] = "redirect to " + rd.HostRedirect
		} else {
			got[vh.Name] = "cluster " + vh.Routes[0].GetRoute().GetCluster()
		}
	}
	want := map[string]string{
		"default/orders:80":   "cluster default/orders:80",
		"default/orders:9000": "redirect to admin.example",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outbound virtual hosts = %v, want %v", got, want)
	}
}
