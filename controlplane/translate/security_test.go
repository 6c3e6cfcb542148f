package translate

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// testBundle stands in for a PEM trust bundle: translation does not parse it.
const testBundle = "-----BEGIN CERTIFICATE-----\nTUVTSEdBVEU=\n-----END CERTIFICATE-----\n"

// inputsFor gives the zero-trust golden cases a trust bundle.
func inputsFor(name string) Inputs {
	if strings.HasPrefix(name, "zerotrust") {
		return Inputs{TrustBundle: []byte(testBundle)}
	}
	return Inputs{}
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

func TestPrincipal(t *testing.T) {
	t.Parallel()
	exact := func(v string) model.StringMatch { return model.StringMatch{Kind: model.MatchExact, Value: v} }
	tests := []struct {
		name string
		in   model.AuthzFrom
		want string
	}{
		{"empty is any", model.AuthzFrom{}, `any:true`},
		{"one service", model.AuthzFrom{Services: []model.StringMatch{exact("spiffe://td/ns/a/svc/b")}},
			`authenticated:{principal_name:{exact:"spiffe://td/ns/a/svc/b"}}`},
		{"services OR", model.AuthzFrom{Services: []model.StringMatch{exact("spiffe://a"), {Kind: model.MatchPrefix, Value: "spiffe://td/"}}},
			`or_ids:{ids:{authenticated:{principal_name:{exact:"spiffe://a"}}}ids:{authenticated:{principal_name:{prefix:"spiffe://td/"}}}}`},
		{"identity regex", model.AuthzFrom{Identities: []model.StringMatch{{Kind: model.MatchRegex, Value: `spiffe://td/ns/[^/]*/svc/x`}}},
			`authenticated:{principal_name:{safe_regex:{regex:"spiffe://td/ns/[^/]*/svc/x"}}}`},
		{"fields AND", model.AuthzFrom{Namespaces: []model.StringMatch{{Kind: model.MatchPrefix, Value: "spiffe://td/ns/ops/"}}, IPBlocks: []string{"10.0.0.0/8", "::1/128"}},
			`and_ids:{ids:{authenticated:{principal_name:{prefix:"spiffe://td/ns/ops/"}}}ids:{or_ids:{ids:{direct_remote_ip:{address_prefix:"10.0.0.0"prefix_len:{value:8}}}ids:{direct_remote_ip:{address_prefix:"::1"prefix_len:{value:128}}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := principal(&tt.in)
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if got := compact(p); got != tt.want {
				t.Errorf("principal =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestPermission(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   model.AuthzTo
		want string
	}{
		{"empty is any", model.AuthzTo{}, `any:true`},
		{"method", model.AuthzTo{Methods: []string{"GET"}},
			`header:{name:":method"string_match:{exact:"GET"}}`},
		{"paths OR", model.AuthzTo{Paths: []model.StringMatch{model.PathPattern("/a"), model.PathPattern("/b/*"), model.PathPattern("/c/*/d")}},
			`or_rules:{rules:{url_path:{path:{exact:"/a"}}}rules:{url_path:{path:{prefix:"/b/"}}}rules:{url_path:{path:{safe_regex:{regex:"/c/[^/]*/d"}}}}}`},
		{"fields AND", model.AuthzTo{Methods: []string{"GET", "POST"}, Headers: []model.Header{{Name: "x-env", Value: "prod"}}},
			`and_rules:{rules:{or_rules:{rules:{header:{name:":method"string_match:{exact:"GET"}}}rules:{header:{name:":method"string_match:{exact:"POST"}}}}}rules:{header:{name:"x-env"string_match:{exact:"prod"}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := permission(&tt.in)
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if got := compact(p); got != tt.want {
				t.Errorf("permission =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRBACConfigs(t *testing.T) {
	t.Parallel()
	rule := func(name string) *model.AuthzRule {
		return &model.AuthzRule{Name: "default/" + name + "/0", Policy: "default/" + name}
	}
	tests := []struct {
		name      string
		in        *model.Authorization
		wantDeny  string
		wantAllow string
	}{
		{"nil enforces nothing", nil, "", ""},
		{"deny only", &model.Authorization{Policies: []string{"default/p"}, Deny: []*model.AuthzRule{rule("p")}},
			`default/p: DENY [default/p/0]`, ""},
		{"default deny without allow rules denies all", &model.Authorization{Policies: []string{}, EnforceAllow: true},
			"", `: ALLOW []`},
		{"both", &model.Authorization{Policies: []string{"default/a", "default/b"}, Deny: []*model.AuthzRule{rule("a")}, Allow: []*model.AuthzRule{rule("b")}, EnforceAllow: true},
			`default/a: DENY [default/a/0]`, `default/a,default/b: ALLOW [default/b/0]`},
	}
	describe := func(r *rbacfilterv3.RBAC) string {
		if r == nil {
			return ""
		}
		var names []string
		for n := range r.Rules.Policies {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Sprintf("%s: %s %v", r.RulesStatPrefix, r.Rules.Action, names)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			deny, allow := rbacConfigs(tt.in)
			if got := describe(deny); got != tt.wantDeny {
				t.Errorf("deny = %q, want %q", got, tt.wantDeny)
			}
			if got := describe(allow); got != tt.wantAllow {
				t.Errorf("allow = %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

// zeroTrust translates testdata/zerotrust.yaml for one node, with or
// without a trust bundle.
func zeroTrust(t *testing.T, node NodeInfo, bundle bool) *Resources {
	t.Helper()
	set, err := policy.Load("testdata/zerotrust.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	in := Inputs{}
	if bundle {
		in.TrustBundle = []byte(testBundle)
	}
	res, err := TranslateWith(m, node, in)
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	return res
}

func sidecarNode(service string) NodeInfo {
	return NodeInfo{ID: "s", Role: RoleSidecar, Namespace: "default", Service: service,
		InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000", OutboundAddress: "127.0.0.1:15001"}
}

func hcmOf(t *testing.T, fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm
}

func filterNames(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	for _, f := range hcm.HttpFilters {
		out = append(out, f.Name)
	}
	return out
}

func TestInboundMTLSModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		service    string
		bundle     bool
		wantChains []string // transport protocol per chain; "" for no match; "+tls" when it has a TLS socket
		wantRBAC   bool
	}{
		{"strict", "orders", true, []string{"+tls"}, true},
		{"permissive", "legacy", true, []string{"tls+tls", "raw_buffer"}, false},
		{"no CA: plaintext", "orders", false, []string{""}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := zeroTrust(t, sidecarNode(tt.service), tt.bundle)
			in := res.Listeners[slices.IndexFunc(res.Listeners, func(l *listenerv3.Listener) bool { return l.Name == InboundName })]
			var chains []string
			for _, fc := range in.FilterChains {
				c := fc.GetFilterChainMatch().GetTransportProtocol()
				if fc.TransportSocket != nil {
					c += "+tls"
					ctx := &tlsv3.DownstreamTlsContext{}
					if err := fc.TransportSocket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
						t.Fatal(err)
					}
					if !ctx.GetRequireClientCertificate().GetValue() ||
						ctx.CommonTlsContext.GetValidationContextSdsSecretConfig().GetName() != RootCASecretName ||
						ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].GetName() != IdentitySecretName ||
						ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig != nil {
						t.Errorf("downstream TLS context = %v", ctx)
					}
				}
				chains = append(chains, c)
			}
			if !slices.Equal(chains, tt.wantChains) {
				t.Errorf("chains = %v, want %v", chains, tt.wantChains)
			}
			if tt.service == "legacy" && (len(in.ListenerFilters) != 1 || in.ListenerFilters[0].Name != tlsInspectorName) {
				t.Errorf("listener filters = %v, want the TLS inspector", in.ListenerFilters)
			}
			want := []string{routerFilterName}
			if tt.wantRBAC {
				want = []string{RBACDenyFilterName, RBACAllowFilterName, routerFilterName}
			}
			if got := filterNames(hcmOf(t, in.FilterChains[0])); !slices.Equal(got, want) {
				t.Errorf("http filters = %v, want %v", got, want)
			}
			if tt.bundle != (len(res.Secrets) == 1) {
				t.Errorf("secrets = %v", res.Secrets)
			}
		})
	}
}

func TestClusterMTLS(t *testing.T) {
	t.Parallel()
	res := zeroTrust(t, sidecarNode("frontend"), true)
	socketFor := func(name string) *tlsv3.UpstreamTlsContext {
		i := slices.IndexFunc(res.Clusters, func(c *clusterT) bool { return c.Name == name })
		if i < 0 {
			t.Fatalf("no cluster %s", name)
		}
		c := res.Clusters[i]
		if c.TransportSocket != nil {
			t.Errorf("cluster %s has a default transport socket", name)
		}
		if len(c.TransportSocketMatches) == 0 {
			return nil
		}
		m := c.TransportSocketMatches[0]
		if m.Name != "mtls" || m.Match.Fields["tlsMode"].GetStringValue() != "mtls" {
			t.Errorf("cluster %s match = %v", name, m)
		}
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := m.TransportSocket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		return ctx
	}
	http := socketFor("default/orders:80")
	san := http.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if len(san) != 1 || san[0].SanType != tlsv3.SubjectAltNameMatcher_URI || san[0].Matcher.GetExact() != "spiffe://example.org/ns/default/svc/orders" {
		t.Errorf("SAN matchers = %v", san)
	}
	if got := http.CommonTlsContext.AlpnProtocols; !slices.Equal(got, []string{"http/1.1"}) {
		t.Errorf("HTTP ALPN = %v", got)
	}
	if got := socketFor("default/orders:9090").CommonTlsContext.AlpnProtocols; !slices.Equal(got, []string{"h2"}) {
		t.Errorf("HTTP2 ALPN = %v", got)
	}
	if socketFor("default/external:80") != nil {
		t.Error("a service without sidecar endpoints got an mTLS match")
	}
	cla := res.Endpoints[slices.IndexFunc(res.Endpoints, func(c *claT) bool { return c.ClusterName == "default/legacy:80" })]
	var marked []bool
	for _, ep := range cla.Endpoints[0].LbEndpoints {
		marked = append(marked, ep.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "mtls")
	}
	if !slices.Equal(marked, []bool{true, false}) {
		t.Errorf("legacy endpoints marked mtls = %v, want [true false]", marked)
	}
}

func TestRouteLevelRBAC(t *testing.T) {
	t.Parallel()
	perRoute := func(t *testing.T, a *anypb.Any) *rbacv3.RBAC {
		t.Helper()
		pr := &rbacfilterv3.RBACPerRoute{}
		if err := a.UnmarshalTo(pr); err != nil {
			t.Fatal(err)
		}
		return pr.GetRbac().GetRules()
	}
	policyNames := func(r *rbacv3.RBAC) []string {
		var out []string
		for n := range r.GetPolicies() {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}

	t.Run("gateway", func(t *testing.T) {
		t.Parallel()
		res := zeroTrust(t, NodeInfo{ID: "g", Role: RoleGateway, Namespace: "default", Gateway: "edge"}, true)
		hcm := hcmOf(t, res.Listeners[0].FilterChains[0])
		if got := filterNames(hcm); !slices.Equal(got, []string{RBACDenyFilterName, RBACAllowFilterName, routerFilterName}) {
			t.Fatalf("http filters = %v", got)
		}
		routes := res.Routes[0].VirtualHosts[0].Routes
		var shop, public int = -1, -1
		for i, r := range routes {
			switch r.Match.GetPathSeparatedPrefix() {
			case "/orders":
				shop = i
			case "/ext":
				public = i
			}
		}
		if shop < 0 || public < 0 {
			t.Fatalf("routes = %v", routes)
		}
		if routes[public].TypedPerFilterConfig != nil {
			t.Errorf("route without a policy has per-route config: %v", routes[public].TypedPerFilterConfig)
		}
		cfg := routes[shop].TypedPerFilterConfig
		// Per route replaces: the gateway's DENY rule is merged in.
		if got := policyNames(perRoute(t, cfg[RBACDenyFilterName])); !slices.Equal(got, []string{"default/edge-blocklist/blocked"}) {
			t.Errorf("per-route deny = %v", got)
		}
		if got := policyNames(perRoute(t, cfg[RBACAllowFilterName])); !slices.Equal(got, []string{"default/shop-readonly/reads"}) {
			t.Errorf("per-route allow = %v", got)
		}
	})
	t.Run("sidecar outbound", func(t *testing.T) {
		t.Parallel()
		res := zeroTrust(t, sidecarNode("frontend"), true)
		out := res.Listeners[slices.IndexFunc(res.Listeners, func(l *listenerv3.Listener) bool { return l.Name == OutboundName })]
		if got := filterNames(hcmOf(t, out.FilterChains[0])); !slices.Equal(got, []string{RBACDenyFilterName, RBACAllowFilterName, routerFilterName}) {
			t.Fatalf("outbound http filters = %v", got)
		}
		rc := res.Routes[slices.IndexFunc(res.Routes, func(rc *routeConfigT) bool { return rc.Name == OutboundName })]
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				cfg := r.TypedPerFilterConfig
				if vh.Name != "default/legacy:80" {
					if cfg != nil {
						t.Errorf("%s: per-route config on a route without a policy", vh.Name)
					}
					continue
				}
				if got := policyNames(perRoute(t, cfg[RBACDenyFilterName])); !slices.Equal(got, []string{"default/legacy-callers/0"}) {
					t.Errorf("legacy per-route deny = %v", got)
				}
				if perRoute(t, cfg[RBACAllowFilterName]) != nil {
					t.Error("legacy per-route allow should be disabled (no ALLOW rules, default ALLOW)")
				}
			}
		}
	})
}
