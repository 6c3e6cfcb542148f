package rbac

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// The HttpConnectionManager filter names the control plane gives the two RBAC
// filters (docs/xds.md), also the keys of their per-route configs. The data
// plane accepts any name.
const (
	denyFilterName  = "meshgate.rbac.deny"
	allowFilterName = "meshgate.rbac.allow"
)

// TestWireShapeAccepted checks that the resources docs/xds.md describes for
// RBAC (a listener whose HCM has the two RBAC filters then the router, and a
// route with both per-route overrides) pass the subset check with the
// filter's rules, and the factory compiles them.
func TestWireShapeAccepted(t *testing.T) {
	t.Parallel()
	deny := rules(rbacconfigv3.RBAC_DENY, map[string]*rbacconfigv3.Policy{
		"default/orders-callers/no-admin": pol(permPath(prefix("/admin/")), prinAny()),
	})
	deny.RulesStatPrefix = "default/orders-callers"
	allow := rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{
		"default/orders-callers/1": {
			Permissions: []*rbacconfigv3.Permission{permAnd(
				permOr(permHeader(header(":method", exact("GET"))), permHeader(header(":method", exact("POST")))),
				permOr(permPath(exact("/orders")), permPath(prefix("/orders/"))),
				permNot(permHeader(header("x-env", ignoreCase(suffix("dev"))))),
			)},
			Principals: []*rbacconfigv3.Principal{
				prinOr(prinID(exact(frontend)), prinID(regex(`spiffe://meshgate\.local/ns/ops/svc/[^/]+`))),
				prinAnd(prinIP("127.0.0.1", 32), prinNot(prinHeader(header("x-block", exact("1"))))),
			},
		},
	})
	allow.RulesStatPrefix = "default/orders-callers"
	filters := []*hcmv3.HttpFilter{
		{Name: denyFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, deny)}},
		{Name: allowFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, allow)}},
		{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, &routerv3.Router{})}},
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "inbound",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: filters,
	}
	listener := &listenerv3.Listener{
		Name: "inbound",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15006}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(t, hcm)},
		}}}},
	}
	factory := Factory()
	checker, err := xdscheck.New(factory.Subset())
	if err != nil {
		t.Fatal(err)
	}
	if err := checker.Check(listener); err != nil {
		t.Fatalf("listener rejected: %v", err)
	}
	for _, cfg := range []*rbacv3.RBAC{deny, allow} {
		if _, err := factory.New("f", cfg, httpfilter.Env{}); err != nil {
			t.Fatalf("New: %v", err)
		}
	}

	rc := &routev3.RouteConfiguration{Name: "inbound", VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "inbound|orders"}}},
			TypedPerFilterConfig: map[string]*anypb.Any{
				denyFilterName:  typed(t, &rbacv3.RBACPerRoute{}),
				allowFilterName: typed(t, &rbacv3.RBACPerRoute{Rbac: allow}),
			},
		}},
	}}}
	if err := checker.Check(rc); err != nil {
		t.Fatalf("route configuration rejected: %v", err)
	}
	if _, err := router.Compile(rc, perRouteCompiler{}); err != nil {
		t.Fatalf("route configuration: %v", err)
	}
}
