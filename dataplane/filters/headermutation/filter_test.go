package headermutation

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Builders.

func remove(name string) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: name}}
}

func add(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *mutationrulesv3.HeaderMutation {
	return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action,
	}}}
}

const (
	appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
	overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfAny = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
)

func muts(request, response []*mutationrulesv3.HeaderMutation) *headermutationv3.Mutations {
	return &headermutationv3.Mutations{RequestMutations: request, ResponseMutations: response}
}

func checker(t testing.TB) *xdscheck.Checker {
	t.Helper()
	f := Factory()
	c, err := xdscheck.New(f.Subset())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// perRouteCompiler compiles HeaderMutationPerRoute values with the factory,
// as the registry does for the proxy.
type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var per headermutationv3.HeaderMutationPerRoute
	if err := config.UnmarshalTo(&per); err != nil {
		return nil, errors.New("want a HeaderMutationPerRoute")
	}
	return Factory().NewPerRoute(&per)
}

func perRoute(t testing.TB, name string, m *headermutationv3.Mutations) map[string]*anypb.Any {
	a, err := anypb.New(&headermutationv3.HeaderMutationPerRoute{Mutations: m})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{name: a}
}

// serve runs r through the filter f (called name) in front of a terminal
// that records the request headers it got and answers with the response
// headers in respond (after the route's response header mutations, as the
// router does).
func serve(t *testing.T, f httpfilter.Filter, rt *router.Route, r *http.Request, respond http.Header) (got http.Header, w *httptest.ResponseRecorder) {
	t.Helper()
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		got = r.Header.Clone()
		for k, v := range respond {
			w.Header()[k] = slices.Clone(v)
		}
		if rt != nil {
			rt.ApplyResponseHeaders(w.Header())
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok"))
	}))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r, rt)
	return got, w
}

func newFilterT(t testing.TB, name string, cfg *headermutationv3.HeaderMutation) httpfilter.Filter {
	t.Helper()
	if err := checker(t).Check(cfg); err != nil {
		t.Fatalf("check: %v", err)
	}
	f, err := Factory().New(name, cfg, httpfilter.Env{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

// TestAppendActions: each append_action, and removals, in order, on the
// request and the response, as Envoy's HeaderMutations.
func TestAppendActions(t *testing.T) {
	t.Parallel()
	f := newFilterT(t, "hm", &headermutationv3.HeaderMutation{Mutations: muts(
		[]*mutationrulesv3.HeaderMutation{
			add("x-append", "new", appendOrAdd),
			add("x-append-missing", "new", appendOrAdd),
			add("x-if-absent", "new", addIfAbsent),
			add("x-if-absent-missing", "new", addIfAbsent),
			add("x-overwrite", "new", overwriteOrAdd),
			add("x-overwrite-missing", "new", overwriteOrAdd),
			add("x-if-exists", "new", overwriteIfAny),
			add("x-if-exists-missing", "new", overwriteIfAny),
			add("x-empty", "", overwriteOrAdd), // dropped, as Envoy does without keep_empty_value
			add("x-percent", "100%%", overwriteOrAdd),
			remove("x-remove"),
			add("x-removed-then-added", "added", appendOrAdd),
			add("x-added-then-removed", "added", appendOrAdd),
			remove("X-Added-Then-Removed"),
		},
		[]*mutationrulesv3.HeaderMutation{
			remove("server"),
			add("x-served-by", "meshgate", appendOrAdd),
			add("cache-control", "no-store", overwriteOrAdd),
		},
	)})
	r := httptest.NewRequest("GET", "/", nil)
	for _, k := range []string{"x-append", "x-if-absent", "x-overwrite", "x-if-exists", "x-remove", "x-empty"} {
		r.Header.Add(k, "old")
		r.Header.Add(k, "older")
	}
	got, w := serve(t, f, nil, r, http.Header{"Server": {"upstream"}, "Cache-Control": {"max-age=60"}, "X-Served-By": {"app"}})
	want := http.Header{
		"X-Append":             {"old", "older", "new"},
		"X-Append-Missing":     {"new"},
		"X-If-Absent":          {"old", "older"},
		"X-If-Absent-Missing":  {"new"},
		"X-Overwrite":          {"new"},
		"X-Overwrite-Missing":  {"new"},
		"X-If-Exists":          {"new"},
		"X-Empty":              {"old", "older"},
		"X-Percent":            {"100%"},
		"X-Removed-Then-Added": {"added"},
	}
	if !equalHeaders(got, want) {
		t.Errorf("request headers = %v, want %v", got, want)
	}
	wantResp := http.Header{"Cache-Control": {"no-store"}, "X-Served-By": {"app", "meshgate"}}
	if !equalHeaders(w.Header(), wantResp) {
		t.Errorf("response headers = %v, want %v", w.Header(), wantResp)
	}
}

// TestPerRouteLevels: the filter's mutations first, then the per-route
// levels, most specific first (so the least specific has the last word),
// or, with most_specific_header_mutations_wins, least specific first; each
// level's mutations on requests and responses; none without a route.
func TestPerRouteLevels(t *testing.T) {
	t.Parallel()
	// Each level appends its name to X-Levels and overwrites X-Winner.
	level := func(name string) *headermutationv3.Mutations {
		return muts(
			[]*mutationrulesv3.HeaderMutation{add("x-levels", name, appendOrAdd), add("x-winner", name, overwriteOrAdd)},
			[]*mutationrulesv3.HeaderMutation{add("x-levels", name, appendOrAdd), add("x-winner", name, overwriteOrAdd)},
		)
	}
	rt := &routev3.Route{
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/route"}},
		Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
		TypedPerFilterConfig: perRoute(t, "hm", level("route")),
		// The route's own response header mutation comes first.
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-levels", Value: "route-config"}}},
	}
	plain := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/plain"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
	}
	other := &routev3.Route{
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/other"}},
		Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
		TypedPerFilterConfig: perRoute(t, "another-filter", level("other")),
	}
	vh := &routev3.VirtualHost{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{rt, plain, other},
		TypedPerFilterConfig: perRoute(t, "hm", level("vhost"))}
	rc := &routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{vh},
		TypedPerFilterConfig: perRoute(t, "hm", level("rc"))}
	tbl, err := router.Compile(rc, perRouteCompiler{})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path   string
		mostSpecific bool
		levels       string // X-Levels upstream, comma-joined
		respLevels   string // X-Levels in the response
		winner       string
	}{
		{"route", "/route", false, "filter,route,vhost,rc", "route-config,filter,route,vhost,rc", "rc"},
		{"route, most specific wins", "/route", true, "filter,rc,vhost,route", "route-config,filter,rc,vhost,route", "route"},
		{"virtual host", "/plain", false, "filter,vhost,rc", "filter,vhost,rc", "rc"},
		{"virtual host, most specific wins", "/plain", true, "filter,rc,vhost", "filter,rc,vhost", "vhost"},
		{"another filter's config is not ours", "/other", false, "filter,vhost,rc", "filter,vhost,rc", "rc"},
		{"no route", "/nowhere", false, "filter", "filter", "filter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFilterT(t, "hm", &headermutationv3.HeaderMutation{Mutations: level("filter"), MostSpecificHeaderMutationsWins: tc.mostSpecific})
			r := httptest.NewRequest("GET", tc.path, nil)
			got, w := serve(t, f, tbl.Match(r), r, nil)
			if l := strings.Join(got["X-Levels"], ","); l != tc.levels || got.Get("X-Winner") != tc.winner {
				t.Errorf("request: X-Levels %q, X-Winner %q; want %q, %q", l, got.Get("X-Winner"), tc.levels, tc.winner)
			}
			if l := strings.Join(w.Header()["X-Levels"], ","); l != tc.respLevels || w.Header().Get("X-Winner") != tc.winner {
				t.Errorf("response: X-Levels %q, X-Winner %q; want %q, %q", l, w.Header().Get("X-Winner"), tc.respLevels, tc.winner)
			}
		})
	}
}

// TestResponseWrappingOnlyWhenNeeded: without response mutations the next
// handler gets the downstream writer itself; with them, a streaming
// response still flushes, and the head is mutated once.
func TestResponseWrappingOnlyWhenNeeded(t *testing.T) {
	t.Parallel()
	requestOnly := newFilterT(t, "hm", &headermutationv3.HeaderMutation{Mutations: muts([]*mutationrulesv3.HeaderMutation{add("x-a", "1", appendOrAdd)}, nil)})
	w := httptest.NewRecorder()
	var gotWriter http.ResponseWriter
	requestOnly.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) { gotWriter = w })).
		ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil)
	if gotWriter != w {
		t.Errorf("request mutations only: the writer was wrapped (%T)", gotWriter)
	}

	responses := newFilterT(t, "hm", &headermutationv3.HeaderMutation{Mutations: muts(nil, []*mutationrulesv3.HeaderMutation{add("x-b", "1", appendOrAdd)})})
	w = httptest.NewRecorder()
	responses.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		_, _ = w.Write([]byte("a")) // implicit 200
		w.(http.Flusher).Flush()
		w.WriteHeader(http.StatusTeapot) // superfluous: no second mutation
		_, _ = w.Write([]byte("b"))
	})).ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil)
	if w.Code != http.StatusOK || !w.Flushed || w.Body.String() != "ab" || !slices.Equal(w.Header()["X-B"], []string{"1"}) {
		t.Errorf("streamed: %d flushed=%v %q %v", w.Code, w.Flushed, w.Body.String(), w.Header())
	}
}

func TestRequestMutationAddsNoAllocationBeyondItsValue(t *testing.T) {
	none := newFilterT(t, "hm", &headermutationv3.HeaderMutation{})
	h := none.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	if a := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r, nil) }); a != 0 {
		t.Errorf("a filter without mutations allocates %v times per request, want 0", a)
	}
	removes := newFilterT(t, "hm", &headermutationv3.HeaderMutation{Mutations: muts([]*mutationrulesv3.HeaderMutation{remove("x-a")}, nil)})
	h = removes.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	if a := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r, nil) }); a != 0 {
		t.Errorf("a removal allocates %v times per request, want 0", a)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	withRequest := func(m ...*mutationrulesv3.HeaderMutation) *headermutationv3.HeaderMutation {
		return &headermutationv3.HeaderMutation{Mutations: muts(m, nil)}
	}
	withResponse := func(m ...*mutationrulesv3.HeaderMutation) *headermutationv3.HeaderMutation {
		return &headermutationv3.HeaderMutation{Mutations: muts(nil, m)}
	}
	appendOpt := func(opt *corev3.HeaderValueOption) *mutationrulesv3.HeaderMutation {
		return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Append{Append: opt}}
	}
	tests := []struct {
		name string
		cfg  proto.Message
		want string
	}{
		// Outside the subset: NACKed by the check.
		{"query parameter mutations", &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{
			QueryParameterMutations: []*corev3.KeyValueMutation{{Remove: "a"}}}},
			"mutations.query_parameter_mutations: not supported"},
		{"response trailers", &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{ResponseTrailersMutations: []*mutationrulesv3.HeaderMutation{remove("a")}}},
			"mutations.response_trailers_mutations: not supported"},
		{"request trailers", &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{RequestTrailersMutations: []*mutationrulesv3.HeaderMutation{remove("a")}}},
			"mutations.request_trailers_mutations: not supported"},
		{"remove on match", withRequest(&mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{
			RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{KeyMatcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "x-"}}}}}),
			"request_mutations[0].remove_on_match: not supported"},
		{"keep_empty_value", withRequest(appendOpt(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "a", Value: "b"}, KeepEmptyValue: true})),
			"append.keep_empty_value: not supported"},
		{"raw_value", withRequest(appendOpt(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "a", RawValue: []byte("b")}})),
			"append.header.raw_value: not supported"},
		//lint:ignore SA1019 the deprecated field must be refused (NACKed)
		{"deprecated append", withResponse(appendOpt(&corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "a", Value: "b"}, Append: wrapperspb.Bool(true)})),
			"append.append: not supported"},
		{"per route: a field of the filter's config", &headermutationv3.HeaderMutationPerRoute{Mutations: &headermutationv3.Mutations{
			Formatters: nil, QueryParameterMutations: []*corev3.KeyValueMutation{{Remove: "a"}}}},
			"query_parameter_mutations: not supported"},
		// Inside the subset, refused when compiled.
		{"formatter command", withRequest(add("x-a", "%DOWNSTREAM_REMOTE_ADDRESS%", appendOrAdd)),
			"mutations.request_mutations[0].append.header.value"},
		{"pseudo-header", withRequest(add(":path", "/x", overwriteOrAdd)), `mutations.request_mutations[0].append.header.key: pseudo-header ":path"`},
		{"host", withRequest(remove("Host")), `mutations.request_mutations[0].remove: "host" cannot be modified`},
		{"hop-by-hop", withRequest(add("Connection", "close", overwriteOrAdd)), `append.header.key: "Connection" is a hop-by-hop header`},
		{"hop-by-hop response", withResponse(remove("transfer-encoding")), `response_mutations[0].remove: "transfer-encoding" is a hop-by-hop header`},
		{"framing", withResponse(add("content-length", "1", overwriteOrAdd)), `"content-length" frames the message`},
		{"forwarded-for", withRequest(remove("x-forwarded-for")), `"x-forwarded-for" is set by the proxy`},
		{"forwarded-proto", withRequest(add("X-Forwarded-Proto", "https", overwriteOrAdd)), `"X-Forwarded-Proto" is set by the proxy`},
		{"no action", withRequest(&mutationrulesv3.HeaderMutation{}), "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := checker(t).Check(tc.cfg)
			if err == nil {
				switch cfg := tc.cfg.(type) {
				case *headermutationv3.HeaderMutation:
					_, err = Factory().New("hm", cfg, httpfilter.Env{})
				default:
					_, err = Factory().NewPerRoute(cfg)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// A forwarded header may be set on a response, and the whole subset
	// passes the check.
	ok := &headermutationv3.HeaderMutation{MostSpecificHeaderMutationsWins: true, Mutations: muts(
		[]*mutationrulesv3.HeaderMutation{remove("x-a"), add("x-b", "1", addIfAbsent)},
		[]*mutationrulesv3.HeaderMutation{remove("x-forwarded-for"), add("x-c", "1", overwriteIfAny)},
	)}
	_ = newFilterT(t, "hm", ok)
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
