package httpproxy

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// testFilter is a filter of the tests: it appends its name to the request
// header X-Trace, answers 401 itself for the path in answer, and, when
// wrapResponse, appends its name to the response header X-Response-Trace
// just before the head is written. wraps counts its Wrap calls; seen
// records the route each request was given ("-" for none) and the
// per-route config found under the filter's name.
type testFilter struct {
	name         string
	answer       string
	wrapResponse bool
	wraps        atomic.Int64
	seen         chan string
}

func (f *testFilter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	f.wraps.Add(1)
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		if f.seen != nil {
			route, per := "-", "-"
			if rt != nil {
				route = rt.Name()
				if v, ok := rt.PerFilterConfig(f.name).(string); ok {
					per = v
				}
			}
			f.seen <- route + " " + per
		}
		r.Header["X-Trace"] = append(r.Header["X-Trace"], f.name)
		if r.URL.Path == f.answer {
			httpfilter.LocalReply(w, rt, http.StatusUnauthorized, "denied by "+f.name+"\n")
			return
		}
		if f.wrapResponse {
			rw := &traceWriter{name: f.name}
			rw.Reset(w, rw)
			w = rw
		}
		next.ServeHTTP(w, r, rt)
	})
}

type traceWriter struct {
	httpfilter.ResponseWriter
	name string
}

func (t *traceWriter) BeforeResponse(_ int, h http.Header) {
	h["X-Response-Trace"] = append(h["X-Response-Trace"], t.name)
}

// perFilterValues compiles a typed_per_filter_config StringValue to its
// string, whatever the filter name.
type perFilterValues struct{}

func (perFilterValues) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var s wrapperspb.StringValue
	if err := config.UnmarshalTo(&s); err != nil {
		return nil, errors.New("want a StringValue")
	}
	return s.GetValue(), nil
}

func TestFiltersRunInOrderBeforeTheRouter(t *testing.T) {
	t.Parallel()
	backend := newEcho(t, "a", false)
	a := &testFilter{name: "a", wrapResponse: true}
	b := &testFilter{name: "b", answer: "/answer-b", wrapResponse: true}
	c := &testFilter{name: "c", answer: "/answer-c"}
	_, base := startProxy(t, &Config{
		Routes: table(t,
			&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/direct"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}},
			&routev3.Route{Match: prefix("/"), Action: forwardTo("A")},
		),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
		Filters:  []httpfilter.Filter{a, b, c},
	}, false)

	// Forwarded: every filter decorated the request, in order; the
	// response hooks ran innermost first, as Envoy's encoder filters do.
	resp := get(t, base+"/x")
	if resp.status != http.StatusOK || strings.Join(resp.echo.Header["X-Trace"], ",") != "a,b,c" {
		t.Fatalf("forwarded: %d, upstream X-Trace %q, want 200 a,b,c", resp.status, resp.echo.Header["X-Trace"])
	}
	if got := strings.Join(resp.header["X-Response-Trace"], ","); got != "b,a" {
		t.Errorf("forwarded: X-Response-Trace %q, want b,a", got)
	}
	// A local answer of the router goes through the wrappers too.
	if resp := get(t, base+"/direct"); resp.status != http.StatusOK || strings.Join(resp.header["X-Response-Trace"], ",") != "b,a" {
		t.Errorf("direct response: %d, X-Response-Trace %q", resp.status, resp.header["X-Response-Trace"])
	}
	// A filter that answers: the filters after it and the router do not
	// run; the wrappers of the filters before it see its answer.
	resp = get(t, base+"/answer-c")
	if resp.status != http.StatusUnauthorized || resp.body != "denied by c\n" || strings.Join(resp.header["X-Response-Trace"], ",") != "b,a" {
		t.Errorf("answered by c: %d %q, X-Response-Trace %q", resp.status, resp.body, resp.header["X-Response-Trace"])
	}
	resp = get(t, base+"/answer-b")
	if resp.status != http.StatusUnauthorized || resp.body != "denied by b\n" || strings.Join(resp.header["X-Response-Trace"], ",") != "a" {
		t.Errorf("answered by b: %d %q, X-Response-Trace %q", resp.status, resp.body, resp.header["X-Response-Trace"])
	}
	// Wrapped once per Store, not per request.
	for _, f := range []*testFilter{a, b, c} {
		if n := f.wraps.Load(); n != 1 {
			t.Errorf("filter %s wrapped %d times, want 1", f.name, n)
		}
	}
}

// TestFiltersSeeTheRoute: the route is selected before the filters run, and
// a filter finds its per-route config by its name; without a route the
// filters still run, then the router answers 404.
func TestFiltersSeeTheRoute(t *testing.T) {
	t.Parallel()
	perFilter := func(name, value string) map[string]*anypb.Any {
		a, err := anypb.New(wrapperspb.String(value))
		if err != nil {
			t.Fatal(err)
		}
		return map[string]*anypb.Any{name: a}
	}
	direct := &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 204}}
	vh := &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
		{Name: "mine", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/mine"}}, Action: direct,
			TypedPerFilterConfig: perFilter("f", "route")},
		{Name: "other", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/other"}}, Action: direct,
			TypedPerFilterConfig: perFilter("g", "route")},
		{Name: "plain", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/plain"}}, Action: direct},
	}, TypedPerFilterConfig: perFilter("f", "virtual host")}
	tbl, err := router.Compile(&routev3.RouteConfiguration{Name: "t", VirtualHosts: []*routev3.VirtualHost{vh}}, perFilterValues{})
	if err != nil {
		t.Fatal(err)
	}
	f := &testFilter{name: "f", seen: make(chan string, 1)}
	h := NewHandler(nil)
	h.Store(&Config{Routes: tbl, Filters: []httpfilter.Filter{f}})
	for path, want := range map[string]string{
		"/mine":  "mine route",
		"/other": "other virtual host",
		"/plain": "plain virtual host",
		"/none":  "- -",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if got := <-f.seen; got != want {
			t.Errorf("%s: the filter saw %q, want %q", path, got, want)
		}
		wantStatus := http.StatusNoContent
		if path == "/none" {
			wantStatus = http.StatusNotFound
		}
		if w.Code != wantStatus {
			t.Errorf("%s: status %d, want %d", path, w.Code, wantStatus)
		}
	}
}

// passThrough is a filter that only calls next.
type passThrough struct{}

func (passThrough) Wrap(next httpfilter.Handler) httpfilter.Handler { return next }

type callNext struct{ next httpfilter.Handler }

func (c *callNext) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	c.next.ServeHTTP(w, r, rt)
}

type nextCaller struct{}

func (nextCaller) Wrap(next httpfilter.Handler) httpfilter.Handler { return &callNext{next: next} }

// reusedWriter is a ResponseWriter reused across requests, so that an
// allocation count measures the handler alone.
type reusedWriter struct{ h http.Header }

func (w *reusedWriter) Header() http.Header         { return w.h }
func (w *reusedWriter) WriteHeader(int)             {}
func (w *reusedWriter) Write(b []byte) (int, error) { return len(b), nil }

// TestFilterChainAddsNoAllocation: a request through filters that only call
// the next allocates exactly as much as without filters (the chain is built
// at Store, not per request).
func TestFilterChainAddsNoAllocation(t *testing.T) {
	routes := table(t, &routev3.Route{Match: prefix("/"), Action: &routev3.Route_DirectResponse{
		DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok\n"}}},
	}})
	allocs := func(filters ...httpfilter.Filter) float64 {
		h := NewHandler(nil)
		h.Store(&Config{Routes: routes, Filters: filters})
		r := httptest.NewRequest("GET", "/x", nil)
		w := &reusedWriter{h: make(http.Header)}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			h.ServeHTTP(w, r)
		})
	}
	none := allocs()
	if chained := allocs(nextCaller{}, nextCaller{}, nextCaller{}, passThrough{}); chained != none {
		t.Fatalf("a request through four filters allocates %v times, without filters %v: want the same", chained, none)
	}
}

func benchmarkDirectResponse(b *testing.B, filters ...httpfilter.Filter) {
	h := NewHandler(nil)
	h.Store(&Config{Routes: table(b, &routev3.Route{Match: prefix("/"), Action: &routev3.Route_DirectResponse{
		DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok\n"}}},
	}}), Filters: filters})
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
	}
}

// BenchmarkDirectResponse is the handler alone (no upstream, no filter).
func BenchmarkDirectResponse(b *testing.B) { benchmarkDirectResponse(b) }

// BenchmarkDirectResponseThreeFilters adds three filters that call the next.
func BenchmarkDirectResponseThreeFilters(b *testing.B) {
	benchmarkDirectResponse(b, nextCaller{}, nextCaller{}, nextCaller{})
}
