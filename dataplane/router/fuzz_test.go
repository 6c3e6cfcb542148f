package router

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
)

// fuzzSeedRoutes are valid route configurations using every feature of the
// subset, the starting points of the fuzzers.
func fuzzSeedRoutes(tb testing.TB) []*routev3.RouteConfiguration {
	tb.Helper()
	perRoute, err := anypb.New(&rbacv3.RBACPerRoute{})
	if err != nil {
		tb.Fatal(err)
	}
	full := rcWith(
		vhost("api", []string{"api.example.com", "*.example.org", "api.*"},
			&routev3.Route{

				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex("/v[0-9]+/.*")},
					CaseSensitive: wrapperspb.Bool(false),
					Headers: []*routev3.HeaderMatcher{
						{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("b")}},
						{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
					},
					QueryParameters: []*routev3.QueryParameterMatcher{
						{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}},
					},
				},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
						Clusters: []*routev3.WeightedCluster_ClusterWeight{
							{Name: "a", Weight: wrapperspb.UInt32(90)}, {Name: "b", Weight: wrapperspb.UInt32(10)},
						},
					}},
					Timeout:              durationpb.New(3e9),
					HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "backend"},
					RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
						Pattern: regex("^/v([0-9]+)/(.*)$"), Substitution: `/\2?v=\1`,
					},
				}},
				TypedPerFilterConfig: map[string]*anypb.Any{"f": perRoute, "g": perRoute},
			},
			&routev3.Route{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "api"}, PrefixRewrite: "/"}},
				RequestHeadersToAdd: []*corev3.HeaderValueOption{{
					Header:       &corev3.HeaderValue{Key: "x-added", Value: "100%%"},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}},
				RequestHeadersToRemove:  []string{"x-drop"},
				ResponseHeadersToAdd:    []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-resp", Value: "v"}}},
				ResponseHeadersToRemove: []string{"server"},
			},
		),
		vhost("all", []string{"*"},
			&routev3.Route{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}},
				Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
					SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
					HostRedirect:           "new.example.com", PortRedirect: 8443,
					PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"},
					ResponseCode:         routev3.RedirectAction_PERMANENT_REDIRECT, StripQuery: true,
				}},
			},
			&routev3.Route{
				Match:  prefixMatch("/health"),
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok"}}}},
			},
			route(prefixMatch("/"), "web"),
		),
	)
	full.VirtualHosts[1].TypedPerFilterConfig = map[string]*anypb.Any{"f": perRoute}
	full.TypedPerFilterConfig = map[string]*anypb.Any{"g": perRoute}
	return []*routev3.RouteConfiguration{full, rcWith(vhost("all", []string{"*"}, route(prefixMatch("/"), "web")))}
}

// fuzzRequests are requests every compiled table is exercised with.
func fuzzRequests() []*http.Request {
	return []*http.Request{
		newRequest("GET", "/v1/x?q=1", "api.example.com", "X-A", "b"),
		newRequest("POST", "/api/a//b", "a.example.org"),
		newRequest("GET", "/old?x=1", "other"),
		newRequest("GET", "/K", "api.x:80"),
		newRequest("GET", "/", ""),
	}
}

// checkCompile runs rc through the check and Compile exactly as the proxy
// does, and exercises the table it compiles to. A rejection must name the
// resource.
func checkCompile(t *testing.T, rc *routev3.RouteConfiguration) {
	tbl, err := checkAndCompile(rc, testPerFilter{})
	if err != nil {
		if want := fmt.Sprintf("route configuration %q", rc.GetName()); !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name the resource (%s): %v", want, err)
		}
		return
	}
	for _, r := range fuzzRequests() {
		rt := tbl.Match(r)
		if rt == nil {
			continue
		}
		_ = rt.PickCluster(12345)
		_ = rt.RewritePath(r.URL.Path)
		if rt.Action() == ActionRedirect {
			_, _ = rt.Redirect(r, "http")
		}
		rt.ApplyRequestHeaders(r.Header.Clone())
		rt.ApplyResponseHeaders(http.Header{"Server": {"x"}})
		_ = rt.PerFilterConfig("f")
		_ = rt.PerFilterConfigs("g")
	}
}

// FuzzCompileRouteConfiguration feeds arbitrary bytes, decoded as a
// RouteConfiguration, through the RDS path of the proxy.
func FuzzCompileRouteConfiguration(f *testing.F) {
	for _, rc := range fuzzSeedRoutes(f) {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc := &routev3.RouteConfiguration{}
		if err := proto.Unmarshal(data, rc); err != nil {
			return
		}
		checkCompile(t, rc)
	})
}

// FuzzMutateRouteConfiguration mutates valid route configurations field by
// field and runs them through the RDS path of the proxy.
func FuzzMutateRouteConfiguration(f *testing.F) {
	seeds := fuzzSeedRoutes(f)
	f.Add([]byte{0})
	f.Add([]byte{1, 3, 0, 1, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		rc := proto.Clone(seeds[int(data[0])%len(seeds)]).(*routev3.RouteConfiguration)
		protofuzz.Mutate(rc, data[1:])
		checkCompile(t, rc)
	})
}

// TestFuzzSeedRoutesCompile keeps the fuzzers' starting points valid, so
// they explore near-valid inputs.
func TestFuzzSeedRoutesCompile(t *testing.T) {
	for i, rc := range fuzzSeedRoutes(t) {
		if _, err := checkAndCompile(rc, testPerFilter{}); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
	}
}
