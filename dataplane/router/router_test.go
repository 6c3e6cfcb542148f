package router

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// --- builders --------------------------------------------------------------

func toCluster(name string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name},
	}}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func route(m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Match: m, Action: toCluster(cluster)}
}

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func rcWith(vhosts ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: vhosts}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: s} }

func mustCompile(t *testing.T, rc *routev3.RouteConfiguration) *Table {
	t.Helper()
	tbl, err := checkAndCompile(rc, nil)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// checkAndCompile is the RDS path of the proxy: the subset check (with the
// per-filter test filter's rules when perFilter is set), then Compile.
func checkAndCompile(rc *routev3.RouteConfiguration, perFilter PerFilterCompiler) (*Table, error) {
	checker := xdscheck.Check
	if perFilter != nil {
		checker = testChecker.Check
	}
	if rc != nil {
		if err := checker(rc); err != nil {
			return nil, err
		}
	}
	return Compile(rc, perFilter)
}

func newRequest(method, target, host string, headers ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// matchedCluster returns the cluster of the matched route, or "" for none.
func matchedCluster(tbl *Table, r *http.Request) string {
	rt := tbl.Match(r)
	if rt == nil {
		return ""
	}
	return rt.PickCluster(0)
}

// --- tests -----------------------------------------------------------------

func TestVirtualHostSelection(t *testing.T) {
	t.Parallel()
	all := prefixMatch("/")
	tbl := mustCompile(t, rcWith(
		vhost("exact", []string{"api.example.com", "Mixed.Example.com"}, route(all, "exact")),
		vhost("short-suffix", []string{"*.example.com"}, route(all, "short-suffix")),
		vhost("long-suffix", []string{"*.b.example.com"}, route(all, "long-suffix")),
		vhost("dash-suffix", []string{"*-dev.example.org"}, route(all, "dash-suffix")),
		vhost("prefix", []string{"api.*"}, route(all, "prefix")),
		vhost("longer-prefix", []string{"api.internal.*"}, route(all, "longer-prefix")),
		vhost("with-port", []string{"svc:8080"}, route(all, "with-port")),
		vhost("default", []string{"*"}, route(all, "default")),
	))
	tests := []struct {
		host string
		want string
	}{
		{"api.example.com", "exact"},
		{"API.EXAMPLE.COM", "exact"},
		{"mixed.example.com", "exact"},
		{"a.example.com", "short-suffix"},
		{"a.b.example.com", "long-suffix"},
		{"x.a.b.example.com", "long-suffix"},
		{"b.example.com", "short-suffix"},
		{"example.com", "default"},
		{"web-dev.example.org", "dash-suffix"},
		{"-dev.example.org", "default"}, // the wildcard must match at least one character
		{"api.other.net", "prefix"},
		{"api.internal.net", "longer-prefix"},
		{"svc:8080", "with-port"},
		{"svc", "default"},
		{"", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			if got := matchedCluster(tbl, newRequest("GET", "/", tc.host)); got != tc.want {
				t.Errorf("host %q: got %q, want %q", tc.host, got, tc.want)
			}
		})
	}
}

// TestIgnorePortInHostMatching: with ignore_port_in_host_matching the
// virtual host is chosen by the Host without its port, and the request's
// Host keeps the port (it is forwarded as the client sent it).
func TestIgnorePortInHostMatching(t *testing.T) {
	t.Parallel()
	all := prefixMatch("/")
	rc := rcWith(
		vhost("foo", []string{"foo.com"}, route(all, "foo")),
		vhost("wild", []string{"*.example.com"}, route(all, "wild")),
		vhost("v6", []string{"[::1]"}, route(all, "v6")),
	)
	rc.IgnorePortInHostMatching = true
	tbl := mustCompile(t, rc)
	tests := []struct {
		host string
		want string
	}{
		{"foo.com", "foo"},
		{"foo.com:8080", "foo"},
		{"FOO.com:80", "foo"},
		{"a.example.com:9000", "wild"},
		{"[::1]:8080", "v6"},
		{"[::1]", "v6"},
		{"bar.com:8080", ""},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			t.Parallel()
			r := newRequest("GET", "/", tc.host)
			if got := matchedCluster(tbl, r); got != tc.want {
				t.Errorf("host %q: got %q, want %q", tc.host, got, tc.want)
			}
			if r.Host != tc.host {
				t.Errorf("Match changed Host %q to %q", tc.host, r.Host)
			}
		})
	}
}

func TestHostWithoutPort(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"example.com":      "example.com",
		"example.com:8080": "example.com",
		"[::1]:80":         "[::1]",
		"[::1]":            "[::1]",
		"::1":              "::1",
		"":                 "",
		":80":              "",
	}
	for in, want := range tests {
		if got := HostWithoutPort(in); got != want {
			t.Errorf("HostWithoutPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoDefaultVirtualHost(t *testing.T) {
	t.Parallel()
	tbl := mustCompile(t, rcWith(vhost("only", []string{"a.com"}, route(prefixMatch("/"), "c"))))
	if rt := tbl.Match(newRequest("GET", "/", "b.com")); rt != nil {
		t.Fatalf("got route %q for an unknown host, want nil", rt.VirtualHost())
	}
}

func TestPathMatching(t *testing.T) {
	t.Parallel()
	insensitive := wrapperspb.Bool(false)
	tests := []struct {
		name  string
		match *routev3.RouteMatch
		paths map[string]bool // request target → matches
	}{
		{"prefix", prefixMatch("/foo"), map[string]bool{
			"/foo": true, "/foo/bar": true, "/foobar": true, "/fo": false, "/FOO": false, "/foo?x=1": true,
		}},
		{"prefix case-insensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/Foo"}, CaseSensitive: insensitive}, map[string]bool{
			"/foo": true, "/FOO/bar": true, "/bar": false,
		}},
		{"exact path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/foo"}}, map[string]bool{
			"/foo": true, "/foo?q=1": true, "/foo/": false, "/foobar": false, "/Foo": false,
		}},
		{"exact path case-insensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/foo"}, CaseSensitive: insensitive}, map[string]bool{
			"/FOO": true, "/foo/": false,
		}},
		{"path_separated_prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/foo"}}, map[string]bool{
			"/foo": true, "/foo/": true, "/foo/bar": true, "/foobar": false, "/foo?x": true, "/fo": false,
		}},
		{"safe_regex whole path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/v[0-9]+/items`)}}, map[string]bool{
			"/v1/items": true, "/v12/items?x=1": true, "/v1/items/3": false, "/x/v1/items": false,
		}},
		{"safe_regex alternation is anchored as a whole", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/a|/b`)}}, map[string]bool{
			"/a": true, "/b": true, "/ab": false, "/bb": false,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: tc.match, Action: toCluster("c")})))
			for target, want := range tc.paths {
				if got := tbl.Match(newRequest("GET", target, "h")) != nil; got != want {
					t.Errorf("%s: matched=%v, want %v", target, got, want)
				}
			}
		})
	}
}

func TestHeaderAndQueryMatching(t *testing.T) {
	t.Parallel()
	sm := func(p *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	hdr := func(name string, spec any, invert bool) *routev3.HeaderMatcher {
		h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
		switch s := spec.(type) {
		case *routev3.HeaderMatcher_StringMatch:
			h.HeaderMatchSpecifier = s
		case bool:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: s}
		}
		return h
	}
	type req struct {
		method  string
		target  string
		headers []string
		want    bool
	}
	tests := []struct {
		name    string
		headers []*routev3.HeaderMatcher
		queries []*routev3.QueryParameterMatcher
		reqs    []req
	}{
		{"exact", []*routev3.HeaderMatcher{hdr("x-env", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "canary"}}), false)}, nil, []req{
			{"GET", "/", []string{"X-Env", "canary"}, true},
			{"GET", "/", []string{"X-Env", "Canary"}, false},
			{"GET", "/", nil, false},
		}},
		{"exact ignore_case", []*routev3.HeaderMatcher{hdr("X-ENV", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "canary"}, IgnoreCase: true}), false)}, nil, []req{
			{"GET", "/", []string{"x-env", "CANARY"}, true},
		}},
		{"multiple values joined with comma", []*routev3.HeaderMatcher{hdr("x-a", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "1,2"}}), false)}, nil, []req{
			{"GET", "/", []string{"x-a", "1", "x-a", "2"}, true},
			{"GET", "/", []string{"x-a", "1"}, false},
		}},
		{"prefix suffix contains", []*routev3.HeaderMatcher{
			hdr("x-p", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}}), false),
			hdr("x-s", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "YZ"}, IgnoreCase: true}), false),
			hdr("x-c", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "mid"}}), false),
		}, nil, []req{
			{"GET", "/", []string{"x-p", "abc", "x-s", "wxyz", "x-c", "amidst"}, true},
			{"GET", "/", []string{"x-p", "cab", "x-s", "wxyz", "x-c", "amidst"}, false},
			{"GET", "/", []string{"x-p", "abc", "x-s", "wxy", "x-c", "amidst"}, false},
			{"GET", "/", []string{"x-p", "abc", "x-s", "wxyz", "x-c", "mi d"}, false},
		}},
		{"safe_regex full match", []*routev3.HeaderMatcher{hdr("x-id", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(`\d{3}`)}}), false)}, nil, []req{
			{"GET", "/", []string{"x-id", "123"}, true},
			{"GET", "/", []string{"x-id", "1234"}, false},
		}},
		{"inverted regex", []*routev3.HeaderMatcher{hdr("x-id", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(`\d{3}`)}}), true)}, nil, []req{
			{"GET", "/", []string{"x-id", "1234"}, true},
			{"GET", "/", []string{"x-id", "123"}, false},
			{"GET", "/", nil, false}, // a missing header never matches a value matcher
		}},
		{"present", []*routev3.HeaderMatcher{hdr("x-debug", true, false)}, nil, []req{
			{"GET", "/", []string{"x-debug", ""}, true},
			{"GET", "/", nil, false},
		}},
		{"absent", []*routev3.HeaderMatcher{hdr("x-debug", false, false)}, nil, []req{
			{"GET", "/", nil, true},
			{"GET", "/", []string{"x-debug", "1"}, false},
		}},
		{"present inverted", []*routev3.HeaderMatcher{hdr("x-debug", true, true)}, nil, []req{
			{"GET", "/", nil, true},
			{"GET", "/", []string{"x-debug", "1"}, false},
		}},
		{":method", []*routev3.HeaderMatcher{hdr(":method", sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "POST"}}), false)}, nil, []req{
			{"POST", "/", nil, true},
			{"GET", "/", nil, false},
		}},
		{"query exact and present", nil, []*routev3.QueryParameterMatcher{
			{Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("a b")}},
			{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
		}, []req{
			{"GET", "/?v=a+b&debug", nil, true},
			{"GET", "/?debug=1&v=a%20b", nil, true},
			{"GET", "/?v=a+b", nil, false},
			{"GET", "/?v=x&v=a+b&debug", nil, false}, // first value only
		}},
		{"query regex", nil, []*routev3.QueryParameterMatcher{
			{Name: "id", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(`[a-f]+`)}}}},
		}, []req{
			{"GET", "/?id=beef", nil, true},
			{"GET", "/?id=beefy", nil, false},
			{"GET", "/", nil, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := prefixMatch("/")
			m.Headers, m.QueryParameters = tc.headers, tc.queries
			tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: m, Action: toCluster("c")})))
			for i, rq := range tc.reqs {
				if got := tbl.Match(newRequest(rq.method, rq.target, "h", rq.headers...)) != nil; got != rq.want {
					t.Errorf("request %d (%s %s %v): matched=%v, want %v", i, rq.method, rq.target, rq.headers, got, rq.want)
				}
			}
		})
	}
}

func TestFirstMatchingRouteWins(t *testing.T) {
	t.Parallel()
	tbl := mustCompile(t, rcWith(vhost("v", []string{"*"},
		route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/api/v2"}}, "v2"),
		route(prefixMatch("/api"), "api"),
		route(prefixMatch("/api/v2"), "never"),
		route(prefixMatch("/"), "rest"),
	)))
	tests := map[string]string{
		"/api/v2":   "v2",
		"/api/v2/x": "api",
		"/api":      "api",
		"/other":    "rest",
	}
	for path, want := range tests {
		if got := matchedCluster(tbl, newRequest("GET", path, "h")); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}

func TestClusters(t *testing.T) {
	t.Parallel()
	weighted := &routev3.Route{Match: prefixMatch("/w"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "b", Weight: wrapperspb.UInt32(1)},
				{Name: "c", Weight: wrapperspb.UInt32(1)},
			},
		}},
	}}}
	direct := &routev3.Route{Match: prefixMatch("/d"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}}
	tbl := mustCompile(t, rcWith(
		vhost("one", []string{"one"}, route(prefixMatch("/"), "c"), weighted, direct),
		vhost("two", []string{"two"}, route(prefixMatch("/"), "a")),
	))
	if got, want := tbl.Clusters(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("Clusters() = %v, want %v", got, want)
	}
}

func TestWeightedPick(t *testing.T) {
	t.Parallel()
	tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "a", Weight: wrapperspb.UInt32(30)},
				{Name: "zero", Weight: wrapperspb.UInt32(0)},
				{Name: "b", Weight: wrapperspb.UInt32(70)},
			},
		}},
	}}})))
	rt := tbl.Match(newRequest("GET", "/", "h"))
	if rt.TotalWeight() != 100 {
		t.Fatalf("TotalWeight = %d, want 100", rt.TotalWeight())
	}
	counts := map[string]int{}
	for i := range uint64(100) {
		counts[rt.PickCluster(i)]++
	}
	if counts["a"] != 30 || counts["b"] != 70 || counts["zero"] != 0 {
		t.Fatalf("distribution over every point = %v, want a:30 b:70", counts)
	}
}

func TestForwardSettings(t *testing.T) {
	t.Parallel()
	mk := func(ra *routev3.RouteAction) *Route {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "c"}
		tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: ra}})))
		return tbl.Match(newRequest("GET", "/", "h"))
	}
	if got := mk(&routev3.RouteAction{}).Timeout(); got != 15*time.Second {
		t.Errorf("unset timeout = %v, want 15s", got)
	}
	if got := mk(&routev3.RouteAction{Timeout: durationpb.New(0)}).Timeout(); got != 0 {
		t.Errorf("zero timeout = %v, want 0 (none)", got)
	}
	if got := mk(&routev3.RouteAction{Timeout: durationpb.New(250 * time.Millisecond)}).Timeout(); got != 250*time.Millisecond {
		t.Errorf("timeout = %v, want 250ms", got)
	}
	for code, want := range map[routev3.RouteAction_ClusterNotFoundResponseCode]int{
		routev3.RouteAction_SERVICE_UNAVAILABLE:   503,
		routev3.RouteAction_NOT_FOUND:             404,
		routev3.RouteAction_INTERNAL_SERVER_ERROR: 500,
	} {
		if got := mk(&routev3.RouteAction{ClusterNotFoundResponseCode: code}).ClusterNotFoundStatus(); got != want {
			t.Errorf("cluster_not_found_response_code %v: status %d, want %d", code, got, want)
		}
	}
	unknown := rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, ClusterNotFoundResponseCode: 7,
	}}}))
	if _, err := Compile(unknown, nil); err == nil || !strings.Contains(err.Error(), "cluster_not_found_response_code: value 7 not supported") {
		t.Errorf("Compile with an unknown cluster_not_found_response_code: %v", err)
	}
	rt := mk(&routev3.RouteAction{HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "backend.internal"}})
	if rt.HostRewrite() != "backend.internal" || rt.Action() != ActionForward {
		t.Errorf("HostRewrite = %q, Action = %v", rt.HostRewrite(), rt.Action())
	}
}

func TestRewritePath(t *testing.T) {
	t.Parallel()
	regexRW := func(pattern, sub string) *matcherv3.RegexMatchAndSubstitute {
		return &matcherv3.RegexMatchAndSubstitute{Pattern: regex(pattern), Substitution: sub}
	}
	pathSep := func(p string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p}}
	}
	tests := []struct {
		name   string
		match  *routev3.RouteMatch
		action *routev3.RouteAction
		path   string
		want   string
	}{
		{"none", prefixMatch("/"), &routev3.RouteAction{}, "/a/b", "/a/b"},
		// Gateway API ReplacePrefixMatch, as the control plane translates it.
		{"replace prefix with prefix", pathSep("/prefix/one"), &routev3.RouteAction{PrefixRewrite: "/one"}, "/prefix/one/two", "/one/two"},
		{"replace prefix with /", prefixMatch("/prefix/"), &routev3.RouteAction{PrefixRewrite: "/"}, "/prefix/one", "/one"},
		{"replace prefix exact", pathSep("/prefix"), &routev3.RouteAction{RegexRewrite: regexRW(`^/prefix/*`, "/")}, "/prefix/one", "/one"},
		{"replace prefix exact, bare", pathSep("/prefix"), &routev3.RouteAction{RegexRewrite: regexRW(`^/prefix/*`, "/")}, "/prefix", "/"},
		{"prefix, case-insensitive match", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}, CaseSensitive: wrapperspb.Bool(false)},
			&routev3.RouteAction{PrefixRewrite: "/v1"}, "/API/x", "/v1/x"},
		{"exact path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}}, &routev3.RouteAction{PrefixRewrite: "/new"}, "/old", "/new"},
		{"ReplaceFullPath", prefixMatch("/full"), &routev3.RouteAction{RegexRewrite: regexRW(`^/.*$`, "/replacement")}, "/full/path/x", "/replacement"},
		{"regex groups, all matches", prefixMatch("/"), &routev3.RouteAction{RegexRewrite: regexRW(`/(\w+)-(\w+)`, `/\2-\1`)}, "/a-b/c-d", "/b-a/d-c"},
		{"regex dollar is literal", prefixMatch("/"), &routev3.RouteAction{RegexRewrite: regexRW(`x`, `$1\\`)}, "/x", `/$1\`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "c"}
			tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: tc.match, Action: &routev3.Route_Route{Route: tc.action}})))
			rt := tbl.Match(newRequest("GET", tc.path, "h"))
			if rt == nil {
				t.Fatalf("%s did not match", tc.path)
			}
			if got := rt.RewritePath(tc.path); got != tc.want {
				t.Errorf("RewritePath(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestRedirect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		match    *routev3.RouteMatch
		redirect *routev3.RedirectAction
		target   string
		host     string
		scheme   string
		wantLoc  string
		wantCode int
	}{
		{"scheme to https drops default port", prefixMatch("/"),
			&routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}},
			"/a?b=c", "example.com", "http", "https://example.com/a?b=c", 301},
		{"keeps a non-default request port", prefixMatch("/"),
			&routev3.RedirectAction{HostRedirect: "other.com"},
			"/a", "example.com:8080", "http", "http://other.com/a", 301},
		{"request port kept when host unchanged", prefixMatch("/"),
			&routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND},
			"/a", "example.com:8080", "http", "http://example.com:8080/a", 302},
		{"port_redirect", prefixMatch("/"),
			&routev3.RedirectAction{PortRedirect: 8443, SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}},
			"/", "example.com:8080", "http", "https://example.com:8443/", 301},
		{"port_redirect equal to scheme default is omitted", prefixMatch("/"),
			&routev3.RedirectAction{PortRedirect: 443, SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}},
			"/", "example.com", "http", "https://example.com/", 301},
		{"port 80 on http omitted", prefixMatch("/"),
			&routev3.RedirectAction{PortRedirect: 80},
			"/", "example.com:8080", "http", "http://example.com/", 301},
		{"path_redirect keeps query", prefixMatch("/"),
			&routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}, ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT},
			"/old?x=1", "h", "http", "http://h/new?x=1", 307},
		{"path_redirect with its own query", prefixMatch("/"),
			&routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?y=2"}, StripQuery: true},
			"/old?x=1", "h", "http", "http://h/new?y=2", 301},
		{"strip_query", prefixMatch("/"),
			&routev3.RedirectAction{StripQuery: true, ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT},
			"/old?x=1", "h", "https", "https://h/old", 308},
		{"prefix_rewrite (ReplacePrefixMatch)", prefixMatch("/prefix/"),
			&routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/"}, ResponseCode: routev3.RedirectAction_SEE_OTHER},
			"/prefix/one", "h", "http", "http://h/one", 303},
		{"ipv6 host", prefixMatch("/"),
			&routev3.RedirectAction{PortRedirect: 9000},
			"/", "[::1]:8080", "http", "http://[::1]:9000/", 301},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{Match: tc.match, Action: &routev3.Route_Redirect{Redirect: tc.redirect}})))
			rt := tbl.Match(newRequest("GET", tc.target, tc.host))
			if rt == nil || rt.Action() != ActionRedirect {
				t.Fatalf("no redirect route matched")
			}
			loc, code := rt.Redirect(newRequest("GET", tc.target, tc.host), tc.scheme)
			if loc != tc.wantLoc || code != tc.wantCode {
				t.Errorf("Redirect = %q %d, want %q %d", loc, code, tc.wantLoc, tc.wantCode)
			}
		})
	}
}

func TestHeaderMutation(t *testing.T) {
	t.Parallel()
	add := func(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: a}
	}
	r := route(prefixMatch("/"), "c")
	r.RequestHeadersToRemove = []string{"x-remove", "x-replaced"}
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		add("x-append", "new", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
		add("x-if-absent", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
		add("x-if-absent-missing", "new", corev3.HeaderValueOption_ADD_IF_ABSENT),
		add("x-overwrite", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-overwrite-missing", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-if-exists", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		add("x-if-exists-missing", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
		add("x-replaced", "added", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD), // remove runs first
		add("x-percent", "100%%", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
		add("x-empty", "", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	r.ResponseHeadersToRemove = []string{"server"}
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{add("x-served-by", "meshgate", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
	tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, r)))
	rt := tbl.Match(newRequest("GET", "/", "h"))

	h := http.Header{}
	for _, k := range []string{"x-remove", "x-replaced", "x-append", "x-if-absent", "x-overwrite", "x-if-exists"} {
		h.Set(k, "old")
	}
	rt.ApplyRequestHeaders(h)
	want := http.Header{
		"X-Append":            {"old", "new"},
		"X-If-Absent":         {"old"},
		"X-If-Absent-Missing": {"new"},
		"X-Overwrite":         {"new"},
		"X-Overwrite-Missing": {"new"},
		"X-If-Exists":         {"new"},
		"X-Replaced":          {"added"},
		"X-Percent":           {"100%"},
	}
	if !equalHeaders(h, want) {
		t.Errorf("request headers = %v, want %v", h, want)
	}
	resp := http.Header{"Server": {"upstream"}}
	rt.ApplyResponseHeaders(resp)
	if !equalHeaders(resp, http.Header{"X-Served-By": {"meshgate"}}) {
		t.Errorf("response headers = %v", resp)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestDirectResponse(t *testing.T) {
	t.Parallel()
	tbl := mustCompile(t, rcWith(vhost("v", []string{"*"}, &routev3.Route{
		Match: prefixMatch("/"),
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 418, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot\n"}},
		}},
	})))
	rt := tbl.Match(newRequest("GET", "/", "h"))
	if status, body := rt.DirectResponse(); rt.Action() != ActionDirectResponse || status != 418 || body != "teapot\n" {
		t.Fatalf("DirectResponse = %d %q (action %v)", status, body, rt.Action())
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	base := func(mutate func(r *routev3.Route)) *routev3.RouteConfiguration {
		r := route(prefixMatch("/"), "c")
		mutate(r)
		return rcWith(vhost("vh", []string{"*"}, r))
	}
	tests := []struct {
		name string
		rc   *routev3.RouteConfiguration
		want []string // substrings of the error
	}{
		{"nil", nil, []string{"nil route configuration"}},
		{"bad path regex", base(func(r *routev3.Route) {
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/(`)}}
		}), []string{`"vh"`, "routes[0]", "safe_regex", "missing closing )"}},
		{"bad header regex", base(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regex(`[`)}}}}}
		}), []string{"headers[0]", "safe_regex"}},
		{"unsupported field", base(func(r *routev3.Route) {
			r.Match.TlsContext = &routev3.RouteMatch_TlsContextMatchOptions{}
		}), []string{"tls_context", "not supported"}},
		{"unsupported route action field", base(func(r *routev3.Route) {
			r.GetRoute().PrefixRewrite = ""
			r.GetRoute().InternalRedirectPolicy = &routev3.InternalRedirectPolicy{}
		}), []string{"internal_redirect_policy", "not supported"}},
		{"unsupported retry condition", base(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,refused-stream"}
		}), []string{"retry_policy.retry_on", "refused-stream", "not supported"}},
		{"prefix_rewrite with regex match", base(func(r *routev3.Route) {
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: regex(`/.*`)}}
			r.GetRoute().PrefixRewrite = "/x"
		}), []string{"prefix_rewrite", "safe_regex"}},
		{"substitution group out of range", base(func(r *routev3.Route) {
			r.GetRoute().RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: regex(`/(a)`), Substitution: `\2`}
		}), []string{"substitution", `\2`}},
		{"header formatter", base(func(r *routev3.Route) {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "%DOWNSTREAM_REMOTE_ADDRESS%"}}}
		}), []string{"request_headers_to_add[0]", "formatter"}},
		{"host header mutation", base(func(r *routev3.Route) {
			r.RequestHeadersToRemove = []string{"Host"}
		}), []string{"request_headers_to_remove[0]", "host"}},
		{"weights sum to zero", base(func(r *routev3.Route) {
			r.Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}},
			}}}}
		}), []string{"weight"}},
		{"unknown cluster_not_found_response_code", base(func(r *routev3.Route) {
			r.GetRoute().ClusterNotFoundResponseCode = 7
		}), []string{"ClusterNotFoundResponseCode"}},
		{"duplicate domain", rcWith(
			vhost("one", []string{"a.com"}, route(prefixMatch("/"), "c")),
			vhost("two", []string{"A.com"}, route(prefixMatch("/"), "c")),
		), []string{`"two"`, "already used", `"one"`}},
		{"wildcard in the middle", rcWith(vhost("v", []string{"a.*.com"}, route(prefixMatch("/"), "c"))), []string{"wildcard"}},
		{"https_redirect", base(func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}}
		}), []string{"https_redirect"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := checkAndCompile(tc.rc, nil)
			if err == nil {
				t.Fatal("Compile succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	m := prefixMatch("/api")
	m.Headers = []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}}
	tbl := mustCompile(t, rcWith(
		vhost("other", []string{"other.com", "*.other.com"}, route(prefixMatch("/"), "x")),
		vhost("v", []string{"*.example.com"}, route(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}, "a"), route(m, "b")),
	))
	r := newRequest("GET", "/api/items?x=1", "www.example.com", "Accept", "*/*")
	if allocs := testing.AllocsPerRun(100, func() {
		if tbl.Match(r) == nil {
			t.Fatal("no match")
		}
	}); allocs != 0 {
		t.Fatalf("Match allocates %v times per call, want 0", allocs)
	}
}

// A route with the grpc match option (Envoy's RouteMatch.grpc, which a
// GRPCRoute's rules carry) matches gRPC calls only.
func TestGRPCMatchOption(t *testing.T) {
	t.Parallel()
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/pkg.Svc/Call"}, Grpc: &routev3.RouteMatch_GrpcRouteMatchOptions{}}
	tbl := mustCompile(t, rcWith(vhost("vh", []string{"*"}, route(m, "grpc"), route(prefixMatch("/"), "http"))))
	tests := []struct {
		contentType, want string
	}{
		{"application/grpc", "grpc"},
		{"application/grpc+proto", "grpc"},
		{"application/GRPC;charset=utf-8", "grpc"},
		{"application/grpc-web", "grpc"}, // chosen before the grpc_web filter translates it
		{"application/grpc-web-text+proto", "grpc"},
		{"application/grpcx", "http"},
		{"application/json", "http"},
		{"", "http"},
	}
	for _, tt := range tests {
		r := newRequest("POST", "/pkg.Svc/Call", "h")
		if tt.contentType != "" {
			r.Header.Set("Content-Type", tt.contentType)
		}
		if got := matchedCluster(tbl, r); got != tt.want {
			t.Errorf("content-type %q: cluster %q, want %q", tt.contentType, got, tt.want)
		}
	}
}
