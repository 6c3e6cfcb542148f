package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

func ptr[T any](v T) *T { return &v }

// builtSet is a hand-built set, usable while policy.Load is not available.
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

// goldenCases are every input the golden and Validate tests translate.
func goldenCases(t *testing.T) map[string]*policy.Set {
	t.Helper()
	cases := map[string]*policy.Set{"built": builtSet()}
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		set, err := policy.Load(in)
		if err != nil {
			t.Fatalf("policy.Load(%s): %v", in, err)
		}
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		cases[name] = set
	}
	return cases
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

func TestGolden(t *testing.T) {
	t.Parallel()
	for name, set := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := model.Compile(set)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			out := map[string]*Resources{}
			for _, node := range nodesFor(m) {
				res, err := TranslateWith(m, node, inputsFor(name))
				if err != nil {
					t.Fatalf("Translate(%s): %v", node.ID, err)
				}
				validateAll(t, res)
				out[node.ID] = res
			}
			got, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the translation; run go test -update and review the diff", golden)
			}
		})
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
		res, err := Translate(m, node)
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
		res, err := Translate(m, node)
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
	res, err := Translate(m, NodeInfo{ID: "g", Role: RoleGateway, Namespace: "default", Gateway: "edge"})
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
	if len(routes) != 3 {
		t.Fatalf("routes = %d, want 3", len(routes))
	}
	if routes[0].Match.GetPath() != "/missing" || routes[0].GetDirectResponse().GetStatus() != 500 {
		t.Errorf("unresolved backend route = %v", routes[0])
	}
	if routes[1].Match.GetPathSeparatedPrefix() != "/orders" || len(routes[1].GetRoute().GetWeightedClusters().GetClusters()) != 2 {
		t.Errorf("canary route = %v", routes[1])
	}
	if routes[2].Match.GetPrefix() != "/" || routes[2].GetRoute().GetCluster() != "default/orders:80" {
		t.Errorf("default route = %v", routes[2])
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
	res, err := Translate(m, NodeInfo{
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
	inbound := res.Clusters[slices.IndexFunc(res.Clusters, func(c *clusterT) bool { return c.Name == "inbound|orders" })]
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
	h2 := res.Clusters[slices.IndexFunc(res.Clusters, func(c *clusterT) bool { return c.Name == "billing/orders:9090" })]
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
	if _, err := Translate(&model.Model{}, NodeInfo{Role: RoleSidecar, Service: "x", OutboundAddress: "nonsense"}); err == nil {
		t.Error("Translate with a malformed outbound_address: want an error")
	}
}

func TestRedirect(t *testing.T) {
	t.Parallel()
	prefix := model.PathMatch{Kind: model.PathPrefix, Value: "/old"}
	tests := []struct {
		name     string
		in       model.Redirect
		listener int32
		want     string
	}{
		{"keep non-default listener port", model.Redirect{StatusCode: 302}, 8080, "port_redirect:8080 response_code:FOUND"},
		{"listener port 80 stays implicit", model.Redirect{StatusCode: 302}, 80, "response_code:FOUND"},
		{"https implies 443", model.Redirect{Scheme: "https", StatusCode: 301}, 8080, `scheme_redirect:"https"`},
		{"explicit port", model.Redirect{Scheme: "https", Port: 8443, StatusCode: 302}, 8080, `scheme_redirect:"https" port_redirect:8443 response_code:FOUND`},
		{"explicit well-known port", model.Redirect{Scheme: "http", Port: 80, StatusCode: 302}, 8080, `scheme_redirect:"http" response_code:FOUND`},
		{"hostname and full path", model.Redirect{Hostname: "b.example", Path: &model.PathModifier{Kind: model.ReplaceFullPath, Value: "/x"}, StatusCode: 302}, 80, `host_redirect:"b.example" path_redirect:"/x" response_code:FOUND`},
		{"prefix", model.Redirect{Path: &model.PathModifier{Kind: model.ReplacePrefixMatch, Value: "/new/"}, StatusCode: 302}, 80, `prefix_rewrite:"/new" response_code:FOUND`},
		{"prefix to root", model.Redirect{Path: &model.PathModifier{Kind: model.ReplacePrefixMatch, Value: "/"}, StatusCode: 302}, 80, `prefix_rewrite:"/" response_code:FOUND`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := strings.Join(strings.Fields(redirect(&tt.in, prefix, tt.listener).String()), " ")
			if got != tt.want {
				t.Errorf("redirect = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPrefixRewrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix, replacement string
		want                string
	}{
		{"/foo", "/bar", `prefix_rewrite:"/bar"`},
		{"/foo/", "/bar/", `prefix_rewrite:"/bar"`},
		{"/foo", "/", `regex_rewrite:{pattern:{regex:"^/foo/*"} substitution:"/"}`},
		{"/a.b", "/", `regex_rewrite:{pattern:{regex:"^/a\\.b/*"} substitution:"/"}`},
		{"/", "/bar", `regex_rewrite:{pattern:{regex:"^/"} substitution:"/bar/"}`},
		{"/", "/", `prefix_rewrite:"/"`},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"->"+tt.replacement, func(t *testing.T) {
			t.Parallel()
			ra := &routev3.RouteAction{}
			setPrefixRewrite(ra, model.PathMatch{Kind: model.PathPrefix, Value: tt.prefix}, tt.replacement)
			got := strings.Join(strings.Fields(ra.String()), " ")
			if got != tt.want {
				t.Errorf("rewrite = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestForward(t *testing.T) {
	t.Parallel()
	m, err := model.Compile(builtSet())
	if err != nil {
		t.Fatal(err)
	}
	backend := func(cluster string, weight int32) *model.Backend {
		return &model.Backend{Service: model.NamespacedName{Namespace: "default", Name: "orders"}, Port: 80, Weight: weight, Cluster: cluster}
	}
	timeout := time.Duration(0)
	tests := []struct {
		name string
		in   model.Action
		want string // "500" or the RouteAction text
	}{
		{"no backends", model.Action{}, "500"},
		{"all weights zero", model.Action{Backends: []*model.Backend{backend("default/orders:80", 0)}}, "500"},
		{"unresolved", model.Action{Backends: []*model.Backend{backend("default/orders:80", 1), backend("", 1)}}, "500"},
		{"zero weight skipped", model.Action{Backends: []*model.Backend{backend("default/orders:80", 0), backend("default/orders-v2:80", 2)}}, `cluster:"default/orders-v2:80"`},
		{"zero timeout", model.Action{Backends: []*model.Backend{backend("default/orders:80", 1)}, Timeout: &timeout}, `cluster:"default/orders:80" timeout:{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := &translator{model: m, clusters: map[string]*clusterT{}, endpoints: map[string]*claT{}}
			ra := tr.forward(&tt.in, model.PathMatch{Kind: model.PathPrefix, Value: "/"})
			got := "500"
			if ra != nil {
				got = strings.Join(strings.Fields(ra.String()), " ")
			}
			if got != tt.want {
				t.Errorf("forward = %s, want %s", got, tt.want)
			}
		})
	}
}
