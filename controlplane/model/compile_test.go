package model

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

func ptr[T any](v T) *T { return &v }

func pathMatch(kind gwapiv1.PathMatchType, value string) gwapiv1.HTTPRouteMatch {
	return gwapiv1.HTTPRouteMatch{Path: &gwapiv1.HTTPPathMatch{Type: &kind, Value: &value}}
}

func withHeaders(m gwapiv1.HTTPRouteMatch, n int) gwapiv1.HTTPRouteMatch {
	for i := range n {
		m.Headers = append(m.Headers, gwapiv1.HTTPHeaderMatch{Name: gwapiv1.HTTPHeaderName(fmt.Sprintf("X-H%d", i)), Value: "v"})
	}
	return m
}

func withQuery(m gwapiv1.HTTPRouteMatch, n int) gwapiv1.HTTPRouteMatch {
	for i := range n {
		m.QueryParams = append(m.QueryParams, gwapiv1.HTTPQueryParamMatch{Name: gwapiv1.HTTPHeaderName(fmt.Sprintf("q%d", i)), Value: "v"})
	}
	return m
}

func withMethod(m gwapiv1.HTTPRouteMatch, method string) gwapiv1.HTTPRouteMatch {
	m.Method = ptr(gwapiv1.HTTPMethod(method))
	return m
}

// route builds an HTTPRoute attached to Gateway default/edge with one rule per
// entry of rules (each a list of matches).
func route(ns, name string, hostnames []string, rules ...[]gwapiv1.HTTPRouteMatch) *policy.HTTPRoute {
	r := &policy.HTTPRoute{}
	r.Name, r.Namespace = name, ns
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge", Namespace: ptr(gwapiv1.Namespace("default"))}}
	for _, h := range hostnames {
		r.Spec.Hostnames = append(r.Spec.Hostnames, gwapiv1.Hostname(h))
	}
	for _, matches := range rules {
		r.Spec.Rules = append(r.Spec.Rules, gwapiv1.HTTPRouteRule{Matches: matches})
	}
	return r
}

// created sets r's metadata.creationTimestamp (RFC 3339).
func created(r *policy.HTTPRoute, rfc3339 string) *policy.HTTPRoute {
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		panic(err) // the test's own constant
	}
	r.CreationTimestamp = metav1.NewTime(t)
	return r
}

func gateway(listeners ...gwapiv1.Listener) *policy.Gateway {
	g := &policy.Gateway{}
	g.Name, g.Namespace = "edge", "default"
	all := gwapiv1.NamespacesFromAll
	for i := range listeners {
		listeners[i].AllowedRoutes = &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: &all}}
	}
	g.Spec.Listeners = listeners
	return g
}

func listener(name string, port int32, hostname string) gwapiv1.Listener {
	l := gwapiv1.Listener{Name: gwapiv1.SectionName(name), Port: port, Protocol: gwapiv1.HTTPProtocolType}
	if hostname != "" {
		l.Hostname = ptr(gwapiv1.Hostname(hostname))
	}
	return l
}

// ruleIDs renders rules as "ns/route#rule.match".
func ruleIDs(rules []*Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = fmt.Sprintf("%s#%d.%d", r.Route, r.RuleIndex, r.MatchIndex)
	}
	return out
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	exact := pathMatch(gwapiv1.PathMatchExact, "/a")
	prefixShort := pathMatch(gwapiv1.PathMatchPathPrefix, "/a")
	prefixLong := pathMatch(gwapiv1.PathMatchPathPrefix, "/a/b")
	regex := pathMatch(gwapiv1.PathMatchRegularExpression, "/a/.*/c/d/e/f")
	root := pathMatch(gwapiv1.PathMatchPathPrefix, "/")
	tests := []struct {
		name   string
		routes []*policy.HTTPRoute
		want   []string
	}{
		{
			name: "exact beats regex beats prefix",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{regex}, []gwapiv1.HTTPRouteMatch{prefixLong}, []gwapiv1.HTTPRouteMatch{exact})},
			want: []string{"default/r#2.0", "default/r#0.0", "default/r#1.0"},
		},
		{
			name: "longer prefix first",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{root, prefixShort, prefixLong})},
			want: []string{"default/r#0.2", "default/r#0.1", "default/r#0.0"},
		},
		{
			name: "path length beats method and headers",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{withHeaders(withMethod(prefixShort, "GET"), 3), prefixLong})},
			want: []string{"default/r#0.1", "default/r#0.0"},
		},
		{
			name: "method match before header count",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{withHeaders(prefixShort, 2), withMethod(prefixShort, "POST")})},
			want: []string{"default/r#0.1", "default/r#0.0"},
		},
		{
			name: "more headers first",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{withHeaders(prefixShort, 1), withQuery(prefixShort, 3), withHeaders(prefixShort, 2)})},
			want: []string{"default/r#0.2", "default/r#0.0", "default/r#0.1"},
		},
		{
			name: "more query params first",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{withQuery(prefixShort, 1), prefixShort, withQuery(prefixShort, 2)})},
			want: []string{"default/r#0.2", "default/r#0.0", "default/r#0.1"},
		},
		{
			name: "ties across routes by namespace then name",
			routes: []*policy.HTTPRoute{
				route("default", "zeta", nil, []gwapiv1.HTTPRouteMatch{prefixShort}),
				route("default", "alpha", nil, []gwapiv1.HTTPRouteMatch{prefixShort}),
				route("apps", "zeta", nil, []gwapiv1.HTTPRouteMatch{prefixShort}),
			},
			want: []string{"apps/zeta#0.0", "default/alpha#0.0", "default/zeta#0.0"},
		},
		{
			name: "ties across routes: the oldest first, then namespace and name",
			routes: []*policy.HTTPRoute{
				created(route("apps", "alpha", nil, []gwapiv1.HTTPRouteMatch{prefixShort}), "2026-01-02T10:00:02Z"),
				created(route("default", "zeta", nil, []gwapiv1.HTTPRouteMatch{prefixShort}), "2026-01-02T10:00:01Z"),
				created(route("default", "beta", nil, []gwapiv1.HTTPRouteMatch{prefixShort}), "2026-01-02T10:00:02Z"),
			},
			want: []string{"default/zeta#0.0", "apps/alpha#0.0", "default/beta#0.0"},
		},
		{
			name: "ties within a route by rule order",
			routes: []*policy.HTTPRoute{route("default", "r", nil,
				[]gwapiv1.HTTPRouteMatch{prefixShort}, []gwapiv1.HTTPRouteMatch{prefixShort})},
			want: []string{"default/r#0.0", "default/r#1.0"},
		},
		{
			name:   "rule without matches is prefix /",
			routes: []*policy.HTTPRoute{route("default", "r", nil, nil, []gwapiv1.HTTPRouteMatch{prefixShort})},
			want:   []string{"default/r#1.0", "default/r#0.0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gateway(listener("http", 8080, ""))}, HTTPRoutes: tt.routes})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			gw := m.Gateway("default", "edge")
			if gw == nil || len(gw.Ports) != 1 || len(gw.Ports[0].VirtualHosts) != 1 {
				t.Fatalf("want one port with one virtual host, got %+v", gw)
			}
			got := ruleIDs(gw.Ports[0].VirtualHosts[0].Rules)
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHostnameIntersection(t *testing.T) {
	t.Parallel()
	prefix := []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/")}
	viaWild := route("default", "viawild", []string{"foo.example.com"}, prefix)
	viaWild.Spec.ParentRefs[0].SectionName = ptr(gwapiv1.SectionName("wild"))
	tests := []struct {
		name      string
		listeners []gwapiv1.Listener
		routes    []*policy.HTTPRoute
		// want maps each virtual host to its rules.
		want map[string][]string
	}{
		{
			name:      "no hostnames anywhere",
			listeners: []gwapiv1.Listener{listener("http", 80, "")},
			routes:    []*policy.HTTPRoute{route("default", "r", nil, prefix)},
			want:      map[string][]string{"*": {"default/r#0.0"}},
		},
		{
			name:      "route hostname under any-host listener",
			listeners: []gwapiv1.Listener{listener("http", 80, "")},
			routes:    []*policy.HTTPRoute{route("default", "r", []string{"a.example.com"}, prefix)},
			want:      map[string][]string{"a.example.com": {"default/r#0.0"}},
		},
		{
			name:      "exact route hostname within wildcard listener",
			listeners: []gwapiv1.Listener{listener("http", 80, "*.example.com")},
			routes: []*policy.HTTPRoute{
				route("default", "a", []string{"a.example.com", "other.org"}, prefix),
				route("default", "all", nil, prefix),
			},
			want: map[string][]string{
				"a.example.com": {"default/a#0.0", "default/all#0.0"},
				"*.example.com": {"default/all#0.0"},
			},
		},
		{
			name:      "wildcard route on exact listener takes the listener hostname",
			listeners: []gwapiv1.Listener{listener("http", 80, "foo.example.com")},
			routes:    []*policy.HTTPRoute{route("default", "r", []string{"*.example.com"}, prefix)},
			want:      map[string][]string{"foo.example.com": {"default/r#0.0"}},
		},
		{
			name:      "two wildcards: the more specific one",
			listeners: []gwapiv1.Listener{listener("http", 80, "*.example.com")},
			routes:    []*policy.HTTPRoute{route("default", "r", []string{"*.api.example.com"}, prefix)},
			want:      map[string][]string{"*.api.example.com": {"default/r#0.0"}},
		},
		{
			name:      "no intersection: not attached",
			listeners: []gwapiv1.Listener{listener("http", 80, "foo.example.com")},
			routes:    []*policy.HTTPRoute{route("default", "r", []string{"bar.example.com"}, prefix)},
			want:      map[string][]string{},
		},
		{
			// viawild attaches only to the wildcard listener, but requests for
			// foo.example.com reach the more specific listener "foo".
			name: "the most specific listener owns a host",
			listeners: []gwapiv1.Listener{
				listener("wild", 80, "*.example.com"),
				listener("foo", 80, "foo.example.com"),
			},
			routes: []*policy.HTTPRoute{
				viaWild,
				route("default", "any", nil, prefix),
			},
			want: map[string][]string{
				"*.example.com":   {"default/any#0.0"},
				"foo.example.com": {"default/any#0.0"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gateway(tt.listeners...)}, HTTPRoutes: tt.routes})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got := map[string][]string{}
			for _, vh := range m.Gateway("default", "edge").Ports[0].VirtualHosts {
				got[vh.Hostname] = ruleIDs(vh.Rules)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("virtual hosts = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAttachment(t *testing.T) {
	t.Parallel()
	prefix := []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/")}
	same := gwapiv1.NamespacesFromSame
	gw := gateway(listener("a", 80, ""), listener("b", 81, ""), listener("c", 82, ""))
	gw.Spec.Listeners[2].AllowedRoutes.Namespaces.From = &same
	bySection := route("default", "section", nil, prefix)
	bySection.Spec.ParentRefs[0].SectionName = ptr(gwapiv1.SectionName("b"))
	byPort := route("default", "port", nil, prefix)
	byPort.Spec.ParentRefs[0].Port = ptr(gwapiv1.PortNumber(80))
	otherNS := route("other", "otherns", nil, prefix)
	m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gw}, HTTPRoutes: []*policy.HTTPRoute{bySection, byPort, otherNS}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	want := map[int32]string{
		80: "[default/port#0.0 other/otherns#0.0]",
		81: "[default/section#0.0 other/otherns#0.0]",
		82: "[]",
	}
	for _, p := range m.Gateway("default", "edge").Ports {
		var got []string
		for _, vh := range p.VirtualHosts {
			got = append(got, ruleIDs(vh.Rules)...)
		}
		if fmt.Sprint(got) != want[p.Number] && !(len(got) == 0 && want[p.Number] == "[]") {
			t.Errorf("port %d rules = %v, want %s", p.Number, got, want[p.Number])
		}
	}
}

func TestCompileServicesAndBackends(t *testing.T) {
	t.Parallel()
	svc := &policy.Service{Name: "orders", Namespace: "shop", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Name: "http", Port: 8080}, {Name: "grpc", Port: 9090, Protocol: policy.ProtocolHTTP2}},
		Endpoints: []policy.Endpoint{
			{Address: "127.0.0.1:18080", Port: "http", Labels: map[string]string{"version": "v1"}},
			{Address: "127.0.0.1:19090", Port: "9090"},
		},
	}}
	r := &policy.HTTPRoute{}
	r.Name, r.Namespace = "orders", "shop"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Kind: ptr(gwapiv1.Kind("Service")), Name: "orders"}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{
		Timeouts: &gwapiv1.HTTPRouteTimeouts{Request: ptr(gwapiv1.Duration("1500ms"))},
		BackendRefs: []gwapiv1.HTTPBackendRef{
			{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Port: ptr(gwapiv1.PortNumber(8080))}, Weight: ptr(int32(3))}},
			{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: "missing", Port: ptr(gwapiv1.PortNumber(80))}}},
		},
	}}
	m, err := Compile(&policy.Set{Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	s := m.Service("shop", "orders")
	if s == nil {
		t.Fatal("service shop/orders missing")
	}
	if got := s.Port(9090); got == nil || got.Protocol != ProtocolHTTP2 || got.Cluster != "shop/orders:9090" || len(m.Endpoints(got)) != 1 {
		t.Errorf("port 9090 = %+v", got)
	}
	for _, tc := range []struct {
		port policy.ServicePort
		want string
	}{
		{policy.ServicePort{Port: 1, AppProtocol: policy.AppProtocolH2C}, ProtocolHTTP2},
		{policy.ServicePort{Port: 2, AppProtocol: policy.AppProtocolGRPC}, ProtocolHTTP2},
		{policy.ServicePort{Port: 3, AppProtocol: policy.AppProtocolWebSocket}, ProtocolHTTP},
		{policy.ServicePort{Port: 4, Protocol: policy.ProtocolHTTP2, AppProtocol: policy.AppProtocolGRPC}, ProtocolHTTP2},
		{policy.ServicePort{Port: 5, Protocol: policy.ProtocolHTTP}, ProtocolHTTP},
	} {
		cs, err := compileService(&policy.Service{Name: "app", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{tc.port}}}, map[string][]*Endpoint{})
		if err != nil || cs.Ports[0].Protocol != tc.want {
			t.Errorf("port %+v: protocol %v (err %v), want %s", tc.port, cs, err, tc.want)
		}
	}
	if got := m.Endpoints(s.Port(8080)); len(got) != 1 || got[0].Port != 18080 || got[0].Labels["version"] != "v1" {
		t.Errorf("port 8080 endpoints = %+v", got)
	}
	// A parentRef without a port shapes calls to every port.
	if len(s.Port(8080).Routes) != 1 || len(s.Port(9090).Routes) != 1 {
		t.Fatalf("mesh routes = %d on 8080, %d on 9090, want 1 each", len(s.Port(8080).Routes), len(s.Port(9090).Routes))
	}
	a := s.Port(8080).Routes[0].Action
	if a.Timeout == nil || a.Timeout.String() != "1.5s" {
		t.Errorf("timeout = %v, want 1.5s", a.Timeout)
	}
	if a.Backends[0].Cluster != "shop/orders:8080" || a.Backends[0].Weight != 3 {
		t.Errorf("backend 0 = %+v", a.Backends[0])
	}
	if a.Backends[1].Cluster != "" || a.Backends[1].Weight != 1 {
		t.Errorf("unresolved backend = %+v, want no cluster and weight 1", a.Backends[1])
	}

	again, err := Compile(&policy.Set{Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}})
	if err != nil || again.Version != m.Version || m.Version == "" {
		t.Errorf("versions %q and %q (err %v): want equal and non-empty", m.Version, again.Version, err)
	}
}

// TestCompileLeavesOut: a resource the compiler cannot represent (the
// policy rejects it: only a bug lets it through) is left out of the model
// and listed in its Problems; the rest of the set compiles.
func TestCompileLeavesOut(t *testing.T) {
	t.Parallel()
	mirror := &policy.HTTPRoute{}
	mirror.Name = "m"
	mirror.Spec.Rules = []gwapiv1.HTTPRouteRule{{Filters: []gwapiv1.HTTPRouteFilter{{Type: gwapiv1.HTTPRouteFilterExtensionRef}}}}
	badEndpoint := &policy.Service{Name: "s", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Port: 80}}, Endpoints: []policy.Endpoint{{Address: "nope"}},
	}}
	good := &policy.Service{Name: "good", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}}
	tests := []struct {
		name, kind string
		set        *policy.Set
		want       string
	}{
		{"unsupported filter", policy.KindHTTPRoute, &policy.Set{HTTPRoutes: []*policy.HTTPRoute{mirror}, Services: []*policy.Service{good}},
			`filter type "ExtensionRef": not supported`},
		{"bad endpoint address", policy.KindService, &policy.Set{Services: []*policy.Service{badEndpoint, good}}, `endpoints[0].address "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := Compile(tt.set)
			if err != nil {
				t.Fatalf("Compile: %v, want the resource left out", err)
			}
			if len(m.Problems) != 1 || m.Problems[0].Kind != tt.kind || !strings.Contains(m.Problems[0].Err.Error(), tt.want) {
				t.Errorf("problems %+v, want one %s: %q", m.Problems, tt.kind, tt.want)
			}
			if m.Service("default", "good") == nil || len(m.Services) != 1 {
				t.Errorf("services %v: want the valid one only", m.Services)
			}
		})
	}
}

func TestGatewayAddress(t *testing.T) {
	t.Parallel()
	gw := gateway(listener("a", 80, ""))
	host := gwapiv1.HostnameAddressType
	gw.Spec.Addresses = []gwapiv1.GatewaySpecAddress{{Type: &host, Value: "edge.local"}, {Value: "10.0.0.1"}}
	m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gw}})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Gateway("default", "edge").Address; got != "10.0.0.1" {
		t.Errorf("address = %q, want 10.0.0.1", got)
	}
	m, err = Compile(nil)
	if err != nil || len(m.Gateways) != 0 || m.Version == "" {
		t.Errorf("Compile(nil) = %+v, %v", m, err)
	}
}

// TestHostnamePrecedence: in a virtual host, the rules of the route with the
// most specific hostname come first, whatever their path; the rules of less
// specific routes follow, for requests they do not match.
func TestHostnamePrecedence(t *testing.T) {
	t.Parallel()
	long := []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/a/very/long/prefix")}
	short := []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/")}
	routes := []*policy.HTTPRoute{
		route("default", "any", nil, long),
		route("default", "wild", []string{"*.example.com"}, long),
		route("default", "exact", []string{"api.example.com"}, short),
	}
	m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gateway(listener("http", 8080, ""))}, HTTPRoutes: routes})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	got := map[string][]string{}
	for _, vh := range m.Gateway("default", "edge").Ports[0].VirtualHosts {
		got[vh.Hostname] = ruleIDs(vh.Rules)
	}
	want := map[string][]string{
		"api.example.com": {"default/exact#0.0", "default/wild#0.0", "default/any#0.0"},
		"*.example.com":   {"default/wild#0.0", "default/any#0.0"},
		"*":               {"default/any#0.0"},
	}
	for h, w := range want {
		if strings.Join(got[h], " ") != strings.Join(w, " ") {
			t.Errorf("virtual host %s: rules %v, want %v", h, got[h], w)
		}
	}
}

// TestMeshRoutePort: a Service parentRef with a port shapes calls to that
// port only.
func TestMeshRoutePort(t *testing.T) {
	t.Parallel()
	svc := &policy.Service{Name: "orders", Namespace: "default", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Name: "http", Port: 80}, {Name: "admin", Port: 9000}},
	}}
	r := route("default", "admin-only", nil, []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/")})
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Kind: ptr(gwapiv1.Kind("Service")), Name: "orders", Port: ptr(gwapiv1.PortNumber(9000))}}
	m, err := Compile(&policy.Set{Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	s := m.Service("default", "orders")
	if n := len(s.Port(80).Routes); n != 0 {
		t.Errorf("port 80 has %d mesh rules, want 0", n)
	}
	if n := len(s.Port(9000).Routes); n != 1 {
		t.Errorf("port 9000 has %d mesh rules, want 1", n)
	}
	if s.DefaultPort().Number != 80 {
		t.Errorf("default port %d, want 80", s.DefaultPort().Number)
	}
}

// TestCompileReferenceGrant: a backendRef of a Gateway-bound route to
// another namespace resolves only with a ReferenceGrant there
// (policy.Set.BackendPermitted).
func TestCompileReferenceGrant(t *testing.T) {
	t.Parallel()
	svc := &policy.Service{Name: "orders", Namespace: "default", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}}
	gw := &policy.Gateway{}
	gw.Name, gw.Namespace = "edge", "shop"
	gw.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType}}
	r := &policy.HTTPRoute{}
	r.Name, r.Namespace = "cross", "shop"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Namespace: ptr(gwapiv1.Namespace("default")), Port: ptr(gwapiv1.PortNumber(80))}}}}}}
	grant := &policy.ReferenceGrant{}
	grant.Name, grant.Namespace = "shop-routes", "default"
	grant.Spec.From = []gwapiv1.ReferenceGrantFrom{{Group: policy.GatewayGroup, Kind: policy.KindHTTPRoute, Namespace: "shop"}}
	grant.Spec.To = []gwapiv1.ReferenceGrantTo{{Group: "", Kind: policy.KindService}}
	for _, tt := range []struct {
		grants      []*policy.ReferenceGrant
		wantCluster bool
	}{{nil, false}, {[]*policy.ReferenceGrant{grant}, true}} {
		m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gw}, Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}, ReferenceGrants: tt.grants})
		if err != nil {
			t.Fatal(err)
		}
		rules := m.Gateway("shop", "edge").Ports[0].VirtualHosts[0].Rules
		if len(rules) != 1 || (rules[0].Action.Backends[0].Cluster != "") != tt.wantCluster {
			t.Errorf("%d grants: rules %+v, want a cluster: %v", len(tt.grants), rules, tt.wantCluster)
		}
	}
}

// TestCompileAllowedRoutesSelector: a route attaches to a listener that
// selects its namespace by a Namespace document's labels
// (policy.Set.ListenerAllows).
func TestCompileAllowedRoutesSelector(t *testing.T) {
	t.Parallel()
	from := gwapiv1.NamespacesFromSelector
	gw := &policy.Gateway{}
	gw.Name, gw.Namespace = "edge", "default"
	gw.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType,
		AllowedRoutes: &gwapiv1.AllowedRoutes{Namespaces: &gwapiv1.RouteNamespaces{From: &from,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}}}}}
	r := &policy.HTTPRoute{}
	r.Name, r.Namespace = "r", "shop"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge", Namespace: ptr(gwapiv1.Namespace("default"))}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{}}
	for _, tt := range []struct {
		namespaces []*policy.Namespace
		want       int
	}{{nil, 0}, {[]*policy.Namespace{{Name: "shop", Labels: map[string]string{"team": "shop"}}}, 1}} {
		m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{gw}, HTTPRoutes: []*policy.HTTPRoute{r}, Namespaces: tt.namespaces})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Gateways[0].RuleCount(); got != tt.want {
			t.Errorf("%d namespaces: %d rules, want %d", len(tt.namespaces), got, tt.want)
		}
	}
}

// meshRoute builds an HTTPRoute in ns whose parentRef is the Service parent
// (namespace/name) with one rule forwarding to backends (service names in
// the parent's namespace, port 80; none: a rule without backendRefs).
func meshRoute(ns, name, parent string, backends ...string) *policy.HTTPRoute {
	parentNS, parentName, _ := strings.Cut(parent, "/")
	r := &policy.HTTPRoute{}
	r.Name, r.Namespace = name, ns
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Group: ptr(gwapiv1.Group("")), Kind: ptr(gwapiv1.Kind("Service")),
		Namespace: ptr(gwapiv1.Namespace(parentNS)), Name: gwapiv1.ObjectName(parentName)}}
	rule := gwapiv1.HTTPRouteRule{}
	for _, b := range backends {
		rule.BackendRefs = append(rule.BackendRefs, gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{
			Name: gwapiv1.ObjectName(b), Namespace: ptr(gwapiv1.Namespace(parentNS)), Port: ptr(gwapiv1.PortNumber(80))}}})
	}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{rule}
	return r
}

func meshService(ns, name string, ports ...policy.ServicePort) *policy.Service {
	if len(ports) == 0 {
		ports = []policy.ServicePort{{Name: "http", Port: 80}}
	}
	return &policy.Service{Name: name, Namespace: ns, Spec: policy.ServiceSpec{Ports: ports}}
}

// TestMeshConsumerRoutes: GEP-1294 (MeshConsumerRoute). A mesh route in the
// Service's namespace (producer) shapes every caller's calls; one in another
// namespace (consumer) only those of its namespace's callers, which then do
// not get the producer routes.
func TestMeshConsumerRoutes(t *testing.T) {
	t.Parallel()
	set := &policy.Set{
		Services: []*policy.Service{meshService("mesh", "echo"), meshService("mesh", "echo-v2"), meshService("consumer", "client")},
		HTTPRoutes: []*policy.HTTPRoute{
			meshRoute("mesh", "producer", "mesh/echo", "echo-v2"),
			meshRoute("consumer", "consumer", "mesh/echo", "echo"),
			meshRoute("consumer", "consumer-2", "mesh/echo", "echo"),
		},
	}
	m, err := Compile(set)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	port := m.Service("mesh", "echo").Port(80)
	tests := []struct {
		caller string
		want   []string
	}{
		{"mesh", []string{"mesh/producer#0.0"}},
		{"default", []string{"mesh/producer#0.0"}},
		{"other", []string{"mesh/producer#0.0"}},
		{"consumer", []string{"consumer/consumer#0.0", "consumer/consumer-2#0.0"}},
	}
	for _, tt := range tests {
		if got := ruleIDs(port.RoutesFor(tt.caller)); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("caller in %q: rules %v, want %v", tt.caller, got, tt.want)
		}
	}
	if got := port.RoutesFor("consumer")[0].Action.Backends[0].Cluster; got != "mesh/echo:80" {
		t.Errorf("consumer route forwards to %q, want mesh/echo:80", got)
	}

	// Without a producer route, the callers of other namespaces get none.
	set.HTTPRoutes = set.HTTPRoutes[1:]
	if m, err = Compile(set); err != nil {
		t.Fatalf("Compile: %v", err)
	}
	port = m.Service("mesh", "echo").Port(80)
	if got := port.RoutesFor("mesh"); len(got) != 0 {
		t.Errorf("caller in mesh: rules %v, want none", ruleIDs(got))
	}
	if got := port.RoutesFor("consumer"); len(got) != 2 {
		t.Errorf("caller in consumer: rules %v, want 2", ruleIDs(got))
	}
}

// TestMeshRouteSectionName: a Service parentRef's sectionName names a port
// of the Service; with port too, both must select the same port.
func TestMeshRouteSectionName(t *testing.T) {
	t.Parallel()
	svc := meshService("default", "orders", policy.ServicePort{Name: "http", Port: 80}, policy.ServicePort{Name: "admin", Port: 9000})
	tests := []struct {
		name        string
		sectionName string
		port        int32
		want80      int
		want9000    int
	}{
		{"neither: every port", "", 0, 1, 1},
		{"sectionName", "admin", 0, 0, 1},
		{"sectionName and its port", "admin", 9000, 0, 1},
		{"sectionName and another port", "admin", 80, 0, 0},
		{"unknown sectionName", "grpc", 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := meshRoute("default", "r", "default/orders", "orders")
			if tt.sectionName != "" {
				r.Spec.ParentRefs[0].SectionName = ptr(gwapiv1.SectionName(tt.sectionName))
			}
			if tt.port != 0 {
				r.Spec.ParentRefs[0].Port = ptr(gwapiv1.PortNumber(tt.port))
			}
			m, err := Compile(&policy.Set{Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			s := m.Service("default", "orders")
			if n80, n9000 := len(s.Port(80).Routes), len(s.Port(9000).Routes); n80 != tt.want80 || n9000 != tt.want9000 {
				t.Errorf("mesh rules: %d on port 80, %d on 9000; want %d and %d", n80, n9000, tt.want80, tt.want9000)
			}
		})
	}
}

// TestMeshRuleWithoutBackends: a mesh rule without backendRefs (and no
// redirect) forwards to the port of the parent Service it is attached to;
// the same rule at a Gateway keeps no backend (500), and a redirect rule
// keeps none either.
func TestMeshRuleWithoutBackends(t *testing.T) {
	t.Parallel()
	svc := meshService("default", "orders", policy.ServicePort{Name: "http", Port: 80}, policy.ServicePort{Name: "alt", Port: 8080})
	r := meshRoute("default", "filters-only", "default/orders")
	r.Spec.Rules[0].Filters = []gwapiv1.HTTPRouteFilter{{
		Type:                   gwapiv1.HTTPRouteFilterResponseHeaderModifier,
		ResponseHeaderModifier: &gwapiv1.HTTPHeaderFilter{Set: []gwapiv1.HTTPHeader{{Name: "X-Header-Set", Value: "set"}}},
	}}
	redirect := meshRoute("default", "redirect", "default/orders")
	redirect.Spec.Rules[0].Matches = []gwapiv1.HTTPRouteMatch{pathMatch(gwapiv1.PathMatchPathPrefix, "/old")}
	redirect.Spec.Rules[0].Filters = []gwapiv1.HTTPRouteFilter{{
		Type: gwapiv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwapiv1.HTTPRequestRedirectFilter{Scheme: ptr("https")},
	}}
	r.Spec.ParentRefs = append(r.Spec.ParentRefs, gwapiv1.ParentReference{Name: "edge", Namespace: ptr(gwapiv1.Namespace("default"))})
	m, err := Compile(&policy.Set{
		Services:   []*policy.Service{svc},
		Gateways:   []*policy.Gateway{gateway(listener("http", 80, ""))},
		HTTPRoutes: []*policy.HTTPRoute{r, redirect},
	})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	s := m.Service("default", "orders")
	for _, port := range s.Ports {
		var filtersOnly *Rule
		for _, rule := range port.Routes {
			if rule.Route.Name == "redirect" {
				if len(rule.Action.Backends) != 0 || rule.Action.Redirect == nil {
					t.Errorf("port %d: redirect rule = %+v, want a redirect without backends", port.Number, rule.Action)
				}
				continue
			}
			filtersOnly = rule
		}
		if filtersOnly == nil {
			t.Fatalf("port %d: no filters-only rule", port.Number)
		}
		b := filtersOnly.Action.Backends
		if len(b) != 1 || b[0].Cluster != port.Cluster || b[0].Port != port.Number || b[0].Weight != 1 {
			t.Errorf("port %d: backends %+v, want the parent's port %s", port.Number, b, port.Cluster)
		}
		if filtersOnly.Action.ResponseHeaders == nil {
			t.Errorf("port %d: the rule lost its filter", port.Number)
		}
	}
	vh := m.Gateway("default", "edge").Ports[0].VirtualHosts[0]
	if len(vh.Rules) != 1 || len(vh.Rules[0].Action.Backends) != 0 {
		t.Errorf("gateway rules %v: want the rule without backends (500)", ruleIDs(vh.Rules))
	}
}

// TestCompileGRPCRoute: a GRPCRoute's rules match gRPC calls only; it
// attaches to a listener unless the listener's allowedRoutes.kinds leaves
// GRPCRoute out; a ReferenceGrant to another namespace must be from
// GRPCRoutes.
func TestCompileGRPCRoute(t *testing.T) {
	t.Parallel()
	svc := &policy.Service{Name: "orders", Namespace: "default", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80, AppProtocol: policy.AppProtocolGRPC}}}}
	listener := func(kinds ...string) *policy.Gateway {
		gw := &policy.Gateway{}
		gw.Name, gw.Namespace = "edge", "shop"
		gw.Spec.Listeners = []gwapiv1.Listener{{Name: "http", Port: 8080, Protocol: gwapiv1.HTTPProtocolType}}
		if len(kinds) > 0 {
			gw.Spec.Listeners[0].AllowedRoutes = &gwapiv1.AllowedRoutes{}
			for _, k := range kinds {
				gw.Spec.Listeners[0].AllowedRoutes.Kinds = append(gw.Spec.Listeners[0].AllowedRoutes.Kinds, gwapiv1.RouteGroupKind{Kind: gwapiv1.Kind(k)})
			}
		}
		return gw
	}
	grpc := &gwapiv1.GRPCRouteSpec{}
	r := &policy.HTTPRoute{GRPC: grpc}
	r.Name, r.Namespace = "calls", "shop"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Namespace: ptr(gwapiv1.Namespace("default")), Port: ptr(gwapiv1.PortNumber(80))}}}}}}
	grant := func(kind string) []*policy.ReferenceGrant {
		g := &policy.ReferenceGrant{}
		g.Name, g.Namespace = "shop-routes", "default"
		g.Spec.From = []gwapiv1.ReferenceGrantFrom{{Group: policy.GatewayGroup, Kind: gwapiv1.Kind(kind), Namespace: "shop"}}
		g.Spec.To = []gwapiv1.ReferenceGrantTo{{Group: "", Kind: policy.KindService}}
		return []*policy.ReferenceGrant{g}
	}
	for _, tt := range []struct {
		name        string
		gw          *policy.Gateway
		grants      []*policy.ReferenceGrant
		wantRules   int
		wantCluster bool
	}{
		{"any kind, granted", listener(), grant(policy.KindGRPCRoute), 1, true},
		{"GRPCRoute listed", listener(policy.KindHTTPRoute, policy.KindGRPCRoute), grant(policy.KindGRPCRoute), 1, true},
		{"HTTPRoute only", listener(policy.KindHTTPRoute), grant(policy.KindGRPCRoute), 0, false},
		{"granted to HTTPRoutes only", listener(), grant(policy.KindHTTPRoute), 1, false},
	} {
		m, err := Compile(&policy.Set{Gateways: []*policy.Gateway{tt.gw}, Services: []*policy.Service{svc}, HTTPRoutes: []*policy.HTTPRoute{r}, ReferenceGrants: tt.grants})
		if err != nil {
			t.Fatal(err)
		}
		var rules []*Rule
		if vhs := m.Gateway("shop", "edge").Ports[0].VirtualHosts; len(vhs) > 0 {
			rules = vhs[0].Rules
		}
		if len(rules) != tt.wantRules {
			t.Errorf("%s: %d rules, want %d", tt.name, len(rules), tt.wantRules)
			continue
		}
		if len(rules) > 0 && (!rules[0].Match.GRPC || (rules[0].Action.Backends[0].Cluster != "") != tt.wantCluster) {
			t.Errorf("%s: rule %+v, want a gRPC match and a cluster: %v", tt.name, rules[0], tt.wantCluster)
		}
	}
}
