package xdscheck

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// testFilter is an HTTP filter as a filter package contributes it: the RBAC
// messages, with a deliberately small subset (rules_stat_prefix only).
func testFilter() HTTPFilter {
	return HTTPFilter{
		ConfigType:   "envoy.extensions.filters.http.rbac.v3.RBAC",
		PerRouteType: "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
		Rules: Rules{
			"envoy.extensions.filters.http.rbac.v3.RBAC":         Allow("rules_stat_prefix"),
			"envoy.extensions.filters.http.rbac.v3.RBACPerRoute": Allow("rbac"),
		},
	}
}

func mustChecker(t *testing.T, filters ...HTTPFilter) *Checker {
	t.Helper()
	c, err := New(filters...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func httpFilter(t *testing.T, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

// withFilters is the full listener whose http_filters are filters then the router.
func withFilters(t *testing.T, filters ...*hcmv3.HttpFilter) proto.Message {
	h := fullHCM(t, false)
	h.HttpFilters = append(filters, h.HttpFilters...)
	return listenerWith(t, h)
}

// perFilter returns the full route configuration with cfg as the per-filter
// config named name at the route, virtual host or route configuration level.
func perFilter(t *testing.T, level, name string, cfg proto.Message) proto.Message {
	rc := fullRouteConfig()
	m := map[string]*anypb.Any{name: mustAny(t, cfg)}
	switch level {
	case "route":
		rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = m
	case "virtual host":
		rc.VirtualHosts[0].TypedPerFilterConfig = m
	case "route configuration":
		rc.TypedPerFilterConfig = m
	}
	return rc
}

func TestCheckerAcceptsFilterSubset(t *testing.T) {
	t.Parallel()
	c := mustChecker(t, testFilter())
	cfg := &rbacv3.RBAC{RulesStatPrefix: "p"}
	many := make([]*hcmv3.HttpFilter, 6)
	for i := range many {
		many[i] = httpFilter(t, "f"+string(rune('a'+i)), cfg)
	}
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"filters before the router", withFilters(t, httpFilter(t, "a", cfg), httpFilter(t, "b", &rbacv3.RBAC{}))},
		{"more than three filters", withFilters(t, many...)},
		{"per-route config on a route, under any name", perFilter(t, "route", "any.name", &rbacv3.RBACPerRoute{})},
		{"per-route config on a virtual host", perFilter(t, "virtual host", "a", &rbacv3.RBACPerRoute{})},
		{"per-route config on a route configuration", perFilter(t, "route configuration", "a", &rbacv3.RBACPerRoute{})},
		{"core resources", fullCluster(t, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := c.Check(tt.msg); err != nil {
				t.Fatalf("Check() = %v, want nil", err)
			}
		})
	}
}

func TestCheckerRejectsOutsideFilterSubset(t *testing.T) {
	t.Parallel()
	c := mustChecker(t, testFilter())
	router := httpFilter(t, "envoy.filters.http.router", &routerv3.Router{})
	tests := []struct {
		name    string
		checker *Checker
		msg     proto.Message
		wantErr string
	}{
		{"a field outside the filter's rules", c, withFilters(t, httpFilter(t, "a", &rbacv3.RBAC{ShadowRulesStatPrefix: "x"})),
			`http_filters[0].typed_config.shadow_rules_stat_prefix: not supported`},
		{"a filter the core does not know", core, withFilters(t, httpFilter(t, "a", &rbacv3.RBAC{})),
			`http_filters[0].typed_config: typed config "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" not supported`},
		{"router not last", c, func() proto.Message {
			h := fullHCM(t, false)
			h.HttpFilters = []*hcmv3.HttpFilter{router, httpFilter(t, "a", &rbacv3.RBAC{})}
			return listenerWith(t, h)
		}(), `typed_config.http_filters[0]: the router must be the last HTTP filter`},
		{"no router", c, func() proto.Message {
			h := fullHCM(t, false)
			h.HttpFilters = []*hcmv3.HttpFilter{httpFilter(t, "a", &rbacv3.RBAC{})}
			return listenerWith(t, h)
		}(), `typed_config.http_filters[0]: the last HTTP filter must be the router`},
		{"disabled filter", c, withFilters(t, &hcmv3.HttpFilter{Name: "a", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &rbacv3.RBAC{})}}),
			`http_filters[0].disabled: not supported`},
		{"per-route config of an unknown type", c, perFilter(t, "route", "a", &routerv3.Router{}),
			`routes[0].typed_per_filter_config["a"]: typed config "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" not supported`},
		{"a listener-level config per route", c, perFilter(t, "virtual host", "a", &rbacv3.RBAC{}),
			`virtual_hosts[0].typed_per_filter_config["a"]: typed config "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" not supported`},
		{"a field outside the per-route rules", c, perFilter(t, "route configuration", "a", &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{ShadowRulesStatPrefix: "x"}}),
			`route configuration "rc": typed_per_filter_config["a"].rbac.shadow_rules_stat_prefix: not supported`},
		{"per-route config without filters", core, perFilter(t, "route", "a", &rbacv3.RBACPerRoute{}),
			`routes[0].typed_per_filter_config: not supported`},
		{"filter config wrapper", c, perFilter(t, "route", "a", &routev3.FilterConfig{Disabled: true}),
			`typed config "type.googleapis.com/envoy.config.route.v3.FilterConfig" not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.checker.Check(tt.msg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check() = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewRefusesConflictingFilters(t *testing.T) {
	t.Parallel()
	other := func(rules Rules) HTTPFilter {
		return HTTPFilter{ConfigType: "envoy.extensions.filters.http.router.v3.Router", Rules: rules}
	}
	tests := []struct {
		name    string
		filters []HTTPFilter
		want    string
	}{
		{"config type twice", []HTTPFilter{testFilter(), testFilter()}, "registered twice"},
		{"the router's type", []HTTPFilter{other(nil)}, "registered twice"},
		{"two rules for one message", []HTTPFilter{{
			ConfigType: "envoy.extensions.filters.http.rbac.v3.RBAC",
			Rules: Rules{
				"envoy.extensions.filters.http.rbac.v3.RBAC": Allow(),
				"envoy.type.matcher.v3.StringMatcher":        Allow("exact"),
			},
		}}, "two rules"},
		{"no rule for the config type", []HTTPFilter{{ConfigType: "envoy.extensions.filters.http.rbac.v3.RBAC"}}, "no rule for"},
		{"empty config type", []HTTPFilter{{}}, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.filters...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	// One rule shared by two filters (the same *Message) is one rule.
	shared := Allow("exact")
	a, b := testFilter(), HTTPFilter{ConfigType: "envoy.extensions.filters.http.router.v3.Router"}
	a.Rules["envoy.type.matcher.v3.PathMatcher"] = shared
	b.ConfigType = protoreflect.FullName("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation")
	b.Rules = Rules{b.ConfigType: Allow(), "envoy.type.matcher.v3.PathMatcher": shared}
	if _, err := New(a, b); err != nil {
		t.Fatalf("New with a shared rule: %v", err)
	}
}
