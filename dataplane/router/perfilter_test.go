package router

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// testChecker knows one HTTP filter whose per-route config is an empty
// RBACPerRoute: what the router does with per-filter configs does not
// depend on any filter.
var testChecker = func() *xdscheck.Checker {
	c, err := xdscheck.New(xdscheck.HTTPFilter{
		ConfigType:   "envoy.extensions.filters.http.rbac.v3.RBAC",
		PerRouteType: "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
		Rules: xdscheck.Rules{
			"envoy.extensions.filters.http.rbac.v3.RBAC":         xdscheck.Allow("rules_stat_prefix"),
			"envoy.extensions.filters.http.rbac.v3.RBACPerRoute": xdscheck.Allow("rbac"),
		},
	})
	if err != nil {
		panic(err)
	}
	return c
}()

// testPerFilter compiles a per-filter config to "<name>@<level>", the level
// taken from the RBACPerRoute's rules_stat_prefix field (anything else to
// its type name), and refuses a config whose prefix is "bad".
type testPerFilter struct{}

func (testPerFilter) CompilePerFilterConfig(name string, config *anypb.Any) (any, error) {
	var per rbacv3.RBACPerRoute
	if err := config.UnmarshalTo(&per); err != nil {
		return string(config.MessageName()), nil
	}
	level := per.GetRbac().GetRulesStatPrefix()
	if level == "bad" {
		return nil, errors.New("refused")
	}
	return name + "@" + level, nil
}

// perFilterAt is a per-filter config map whose values name their level.
func perFilterAt(t *testing.T, level string, names ...string) map[string]*anypb.Any {
	m := make(map[string]*anypb.Any, len(names))
	for _, n := range names {
		m[n] = mustAny(t, &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{RulesStatPrefix: level}})
	}
	return m
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestPerFilterConfigLevels: the most specific level wins (route, then
// virtual host, then route configuration), as in Envoy, and every level is
// kept in that order for filters that combine them.
func TestPerFilterConfigLevels(t *testing.T) {
	t.Parallel()
	withConfig := func(path string, cfg map[string]*anypb.Any) *routev3.Route {
		r := route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}}, "c")
		r.TypedPerFilterConfig = cfg
		return r
	}
	vh := vhost("v", []string{"*"},
		withConfig("/none", nil),
		withConfig("/route", perFilterAt(t, "route", "a", "b", "c")),
	)
	vh.TypedPerFilterConfig = perFilterAt(t, "vhost", "a", "b")
	other := vhost("other", []string{"other"}, withConfig("/none", nil))
	rc := rcWith(vh, other)
	rc.TypedPerFilterConfig = perFilterAt(t, "rc", "a", "d")
	tbl, err := Compile(rc, testPerFilter{})
	if err != nil {
		t.Fatal(err)
	}

	wantTypes := map[string][]string{
		"a": {"envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}, "b": {"envoy.extensions.filters.http.rbac.v3.RBACPerRoute"},
		"c": {"envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}, "d": {"envoy.extensions.filters.http.rbac.v3.RBACPerRoute"},
	}
	if got := tbl.PerFilterTypes(); !maps.EqualFunc(got, wantTypes, slices.Equal) {
		t.Errorf("PerFilterTypes = %v, want %v", got, wantTypes)
	}

	tests := []struct {
		host, path, filter string
		want               any
		wantAll            []any
	}{
		{"h", "/route", "a", "a@route", []any{"a@route", "a@vhost", "a@rc"}},
		{"h", "/route", "b", "b@route", []any{"b@route", "b@vhost"}},
		{"h", "/route", "c", "c@route", []any{"c@route"}},
		{"h", "/route", "d", "d@rc", []any{"d@rc"}},
		{"h", "/none", "a", "a@vhost", []any{"a@vhost", "a@rc"}},
		{"h", "/none", "c", nil, nil},
		{"other", "/none", "a", "a@rc", []any{"a@rc"}},
		{"other", "/none", "b", nil, nil},
		{"h", "/route", "unknown", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.host+tc.path+" "+tc.filter, func(t *testing.T) {
			t.Parallel()
			rt := tbl.Match(newRequest("GET", tc.path, tc.host))
			if rt == nil {
				t.Fatal("no route")
			}
			if got := rt.PerFilterConfig(tc.filter); got != tc.want {
				t.Errorf("PerFilterConfig = %v, want %v", got, tc.want)
			}
			if got := rt.PerFilterConfigs(tc.filter); !slices.Equal(got, tc.wantAll) {
				t.Errorf("PerFilterConfigs = %v, want %v", got, tc.wantAll)
			}
		})
	}
}

// TestRoutesWithoutPerFilterConfigShareTheirVirtualHosts: a route with no
// config of its own takes its virtual host's without copying it.
func TestRoutesWithoutPerFilterConfigShareTheirVirtualHosts(t *testing.T) {
	t.Parallel()
	routes := make([]*routev3.Route, 100)
	for i := range routes {
		routes[i] = route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/r%d", i)}}, "c")
	}
	vh := vhost("v", []string{"*"}, routes...)
	vh.TypedPerFilterConfig = perFilterAt(t, "vhost", "a")
	tbl, err := Compile(rcWith(vh), testPerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	first, last := tbl.Match(newRequest("GET", "/r0", "h")), tbl.Match(newRequest("GET", "/r99", "h"))
	if &first.perFilter[0] != &last.perFilter[0] {
		t.Error("two routes without their own per-filter config hold copies of their virtual host's")
	}
}

func TestPerFilterConfigErrors(t *testing.T) {
	t.Parallel()
	atRoute := func(cfg map[string]*anypb.Any) *routev3.RouteConfiguration {
		r := route(prefixMatch("/"), "c")
		r.TypedPerFilterConfig = cfg
		return rcWith(vhost("v", []string{"*"}, r))
	}
	atVhost := atRoute(nil)
	atVhost.VirtualHosts[0].TypedPerFilterConfig = perFilterAt(t, "bad", "x")
	atRC := atRoute(nil)
	atRC.TypedPerFilterConfig = perFilterAt(t, "bad", "x")
	tests := []struct {
		name      string
		rc        *routev3.RouteConfiguration
		perFilter PerFilterCompiler
		want      string
	}{
		{"refused on a route", atRoute(perFilterAt(t, "bad", "x")), testPerFilter{}, `virtual_hosts[0] "v": routes[0]: typed_per_filter_config["x"]: refused`},
		{"refused on a virtual host", atVhost, testPerFilter{}, `virtual_hosts[0] "v": typed_per_filter_config["x"]: refused`},
		{"refused on the route configuration", atRC, testPerFilter{}, `route configuration "rc": typed_per_filter_config["x"]: refused`},
		{"no compiler", atRoute(map[string]*anypb.Any{"x": mustAny(t, &routerv3.Router{})}), nil, "routes[0]: typed_per_filter_config: not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tc.rc, tc.perFilter)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPerFilterConfigDoesNotAllocate(t *testing.T) {
	r := route(prefixMatch("/"), "c")
	r.TypedPerFilterConfig = perFilterAt(t, "route", "a", "b", "c")
	tbl, err := Compile(rcWith(vhost("v", []string{"*"}, r)), testPerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	rt := tbl.Match(newRequest("GET", "/", "h"))
	if allocs := testing.AllocsPerRun(100, func() {
		if rt.PerFilterConfig("c") == nil || rt.PerFilterConfigs("b") == nil {
			t.Fatal("no config")
		}
	}); allocs != 0 {
		t.Fatalf("PerFilterConfig allocates %v times per call, want 0", allocs)
	}
}
