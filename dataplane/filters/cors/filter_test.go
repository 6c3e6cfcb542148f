package cors

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// perRouteCompiler compiles CorsPolicy values with the factory, as the
// registry does for the proxy.
type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var p corsv3.CorsPolicy
	if err := config.UnmarshalTo(&p); err != nil {
		return nil, errors.New("want a CorsPolicy")
	}
	return newPerRoute(&p)
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

// table is a route configuration whose virtual host has the CorsPolicy vh
// (nil: none) and three routes: /api with the policy api, /public with
// the policy public, /plain without one.
func table(t *testing.T, vh, api, public *corsv3.CorsPolicy) *router.Table {
	t.Helper()
	checker, err := xdscheck.New(xdscheckFilter())
	if err != nil {
		t.Fatal(err)
	}
	per := func(p *corsv3.CorsPolicy) map[string]*anypb.Any {
		if p == nil {
			return nil
		}
		if err := checker.Check(p); err != nil {
			t.Fatalf("check: %v", err)
		}
		a, err := anypb.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]*anypb.Any{"cors": a}
	}
	route := func(prefix string, p *corsv3.CorsPolicy) *routev3.Route {
		return &routev3.Route{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			TypedPerFilterConfig: per(p),
		}
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"}, TypedPerFilterConfig: per(vh),
		Routes: []*routev3.Route{route("/api", api), route("/public", public), route("/plain", nil)},
	}}}
	tbl, err := router.Compile(rc, perRouteCompiler{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func xdscheckFilter() xdscheck.HTTPFilter {
	f := Factory()
	return f.Subset()
}

// TestCORS: preflights answered by the filter with Envoy's headers
// (wildcards echoing the request), actual requests from allowed origins
// given the allow/expose/credentials headers, requests from other origins
// and without an Origin passed unchanged, and the virtual host's policy
// filling the fields a route's leaves empty.
func TestCORS(t *testing.T) {
	t.Parallel()
	api := &corsv3.CorsPolicy{
		AllowOriginStringMatch:       []*matcherv3.StringMatcher{exact("https://www.foo.com"), regex(`https://.*\.bar\.com`)},
		AllowMethods:                 "GET, OPTIONS",
		AllowHeaders:                 "x-header-1, x-header-2",
		ExposeHeaders:                "x-header-3, x-header-4",
		MaxAge:                       "3600",
		AllowCredentials:             wrapperspb.Bool(true),
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	public := &corsv3.CorsPolicy{AllowMethods: "*", AllowHeaders: "*"}
	vh := &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{regex(".*")}, MaxAge: "5"}
	tbl := table(t, vh, api, public)
	f, err := newFilter("cors", &corsv3.Cors{}, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		headers    map[string]string
		wantNext   bool              // the request reached the upstream
		want       map[string]string // response headers ("" absent)
		wantStatus int
	}{
		{name: "preflight, exact origin", method: "OPTIONS", path: "/api",
			headers: map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-header-1"},
			want: map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "GET, OPTIONS",
				"Access-Control-Allow-Headers": "x-header-1, x-header-2", "Access-Control-Expose-Headers": "x-header-3, x-header-4",
				"Access-Control-Max-Age": "3600", "Access-Control-Allow-Credentials": "true"}, wantStatus: 200},
		{name: "preflight, wildcard origin", method: "OPTIONS", path: "/api",
			headers: map[string]string{"Origin": "https://xpto.www.bar.com", "Access-Control-Request-Method": "GET"},
			want:    map[string]string{"Access-Control-Allow-Origin": "https://xpto.www.bar.com"}, wantStatus: 200},
		{name: "preflight, other origin: answered without allow-origin", method: "OPTIONS", path: "/api",
			headers: map[string]string{"Origin": "https://foobar.com", "Access-Control-Request-Method": "GET"},
			want:    map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""}, wantStatus: 200},
		{name: "preflight, wildcards echo, vh origins and max age", method: "OPTIONS", path: "/public",
			headers: map[string]string{"Origin": "https://any.org", "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a, x-b"},
			want: map[string]string{"Access-Control-Allow-Origin": "https://any.org", "Access-Control-Allow-Methods": "PUT",
				"Access-Control-Allow-Headers": "x-a, x-b", "Access-Control-Max-Age": "5", "Access-Control-Allow-Credentials": ""}, wantStatus: 200},
		{name: "actual request, allowed", method: "GET", path: "/api", headers: map[string]string{"Origin": "https://www.foo.com"}, wantNext: true,
			want: map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Credentials": "true",
				"Access-Control-Expose-Headers": "x-header-3, x-header-4", "Access-Control-Allow-Methods": ""}, wantStatus: 200},
		{name: "actual request, other origin", method: "GET", path: "/api", headers: map[string]string{"Origin": "https://foobar.com"}, wantNext: true,
			want: map[string]string{"Access-Control-Allow-Origin": ""}, wantStatus: 200},
		{name: "no origin", method: "OPTIONS", path: "/api", headers: map[string]string{"Access-Control-Request-Method": "GET"}, wantNext: true,
			want: map[string]string{"Access-Control-Allow-Origin": ""}, wantStatus: 200},
		{name: "OPTIONS without request method is not a preflight", method: "OPTIONS", path: "/api",
			headers: map[string]string{"Origin": "https://www.foo.com"}, wantNext: true,
			want: map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com"}, wantStatus: 200},
		{name: "route with the virtual host's policy alone", method: "OPTIONS", path: "/plain",
			headers: map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"},
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Max-Age": "5", "Access-Control-Allow-Methods": ""}, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(tc.method, "http://x"+tc.path, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			rt := tbl.Match(r)
			reached := false
			h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
				reached = true
				w.Header().Set("X-Upstream", "yes")
				w.WriteHeader(http.StatusOK)
			}))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, rt)
			if reached != tc.wantNext || w.Code != tc.wantStatus {
				t.Errorf("upstream reached %v, status %d; want %v, %d", reached, w.Code, tc.wantNext, tc.wantStatus)
			}
			for k, v := range tc.want {
				if got := w.Header().Get(k); got != v || v == "" && len(w.Header()[k]) > 0 {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestNoCostWithoutCORS: a route without a CorsPolicy, or a request
// without an Origin, is passed through without allocating.
func TestNoCostWithoutCORS(t *testing.T) {
	tbl := table(t, nil, &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a.com")}}, nil)
	f, err := newFilter("cors", &corsv3.Cors{}, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	w := httptest.NewRecorder()
	for _, path := range []string{"/plain", "/api"} {
		r := httptest.NewRequest("GET", "http://x"+path, nil)
		if path == "/plain" {
			r.Header.Set("Origin", "https://a.com")
		}
		rt := tbl.Match(r)
		if allocs := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r, rt) }); allocs != 0 {
			t.Errorf("%s: %v allocations, want none", path, allocs)
		}
	}
}

// TestSubset: filter_enabled and shadow_enabled, too many origins and a
// header value with a control character are NACKed.
func TestSubset(t *testing.T) {
	t.Parallel()
	checker, err := xdscheck.New(xdscheckFilter())
	if err != nil {
		t.Fatal(err)
	}
	many := make([]*matcherv3.StringMatcher, MaxOrigins+1)
	for i := range many {
		many[i] = exact("https://a.com")
	}
	for _, tc := range []struct {
		name    string
		p       *corsv3.CorsPolicy
		wantErr string
	}{
		{"header injection", &corsv3.CorsPolicy{AllowMethods: "GET\r\nX-Evil: 1"}, "allow_methods: not a valid header value"},
		{"filter_enabled", &corsv3.CorsPolicy{FilterEnabled: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 1}}}, "filter_enabled: not supported"},
		{"too many origins", &corsv3.CorsPolicy{AllowOriginStringMatch: many}, "at most 256 entries"},
	} {
		err := checker.Check(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
