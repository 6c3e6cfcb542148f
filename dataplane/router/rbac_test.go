package router

import (
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/rbac"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// denyPath is an RBAC config denying requests whose path has prefix p.
func denyPath(p string) *rbacv3.RBAC {
	return &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action: rbacconfigv3.RBAC_DENY,
		Policies: map[string]*rbacconfigv3.Policy{"ns/pol/0": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}}}}}},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
		}},
	}}
}

func TestRBACOverride(t *testing.T) {
	t.Parallel()
	withPerFilter := func(path string, cfg map[string]proto.Message) *routev3.Route {
		r := route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}}, "c")
		if cfg != nil {
			r.TypedPerFilterConfig = make(map[string]*anypb.Any)
			for k, m := range cfg {
				r.TypedPerFilterConfig[k] = mustAny(t, m)
			}
		}
		return r
	}
	tbl := mustCompile(t, rcWith(vhost("v", []string{"*"},
		withPerFilter("/plain", nil),
		withPerFilter("/override", map[string]proto.Message{rbac.DenyFilterName: &rbacv3.RBACPerRoute{Rbac: denyPath("/over")}}),
		withPerFilter("/disabled", map[string]proto.Message{rbac.AllowFilterName: &rbacv3.RBACPerRoute{}}),
		withPerFilter("/norules", map[string]proto.Message{rbac.AllowFilterName: &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}}}),
	)))

	type want struct {
		set, hasFilter, enforces bool
	}
	tests := []struct {
		path, filter string
		want         want
	}{
		{"/plain", rbac.DenyFilterName, want{}},
		{"/plain", rbac.AllowFilterName, want{}},
		{"/override", rbac.DenyFilterName, want{set: true, hasFilter: true, enforces: true}},
		{"/override", rbac.AllowFilterName, want{}},
		{"/disabled", rbac.AllowFilterName, want{set: true}},
		{"/disabled", rbac.DenyFilterName, want{}},
		{"/norules", rbac.AllowFilterName, want{set: true, hasFilter: true}},
		{"/plain", "envoy.filters.http.rbac", want{}},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.filter, func(t *testing.T) {
			t.Parallel()
			rt := tbl.Match(newRequest("GET", tc.path, "h"))
			if rt == nil {
				t.Fatal("no route")
			}
			f, set := rt.RBACOverride(tc.filter)
			got := want{set: set, hasFilter: f != nil, enforces: f.Enforces()}
			if got != tc.want {
				t.Fatalf("RBACOverride = %+v, want %+v", got, tc.want)
			}
		})
	}

	rt := tbl.Match(newRequest("GET", "/override", "h"))
	f, _ := rt.RBACOverride(rbac.DenyFilterName)
	if allowed, policy := f.Evaluate(newRequest("GET", "/override", "h")); allowed || policy != "ns/pol/0" {
		t.Errorf("override Evaluate = %v %q, want denied by ns/pol/0", allowed, policy)
	}
}

func TestRBACOverrideErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  map[string]proto.Message
		want []string
	}{
		{"other key", map[string]proto.Message{"envoy.filters.http.cors": &rbacv3.RBACPerRoute{}}, []string{"typed_per_filter_config", "envoy.filters.http.cors", "not supported"}},
		{"wrong type", map[string]proto.Message{rbac.DenyFilterName: &routerv3.Router{}}, []string{"typed_per_filter_config", "not supported"}},
		{"unsupported rbac field", map[string]proto.Message{rbac.AllowFilterName: &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{ShadowRulesStatPrefix: "x"}}},
			[]string{"shadow_rules_stat_prefix", "not supported"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := route(prefixMatch("/"), "c")
			r.TypedPerFilterConfig = make(map[string]*anypb.Any)
			for k, m := range tc.cfg {
				r.TypedPerFilterConfig[k] = mustAny(t, m)
			}
			_, err := Compile(rcWith(vhost("v", []string{"*"}, r)))
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// The per-route RBAC config is checked by the router even without xdscheck's
// route rule: compilePerFilterConfig rejects a bad key on its own.
func TestCompilePerFilterConfigRejectsOtherKeys(t *testing.T) {
	t.Parallel()
	rt := &Route{}
	err := compilePerFilterConfig(rt, map[string]*anypb.Any{"x": mustAny(t, &rbacv3.RBACPerRoute{})})
	if err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("err = %v", err)
	}
	if _, set := rt.RBACOverride(rbac.DenyFilterName); set {
		t.Error("override set after an error")
	}
}
