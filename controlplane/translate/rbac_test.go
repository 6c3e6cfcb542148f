package translate

import (
	"fmt"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

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
			switch r.Match.GetPath() { // PathPrefix: the path itself, then what is under it
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
		rc := res.Routes[slices.IndexFunc(res.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.Name == OutboundName })]
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
