package cache

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	fc := new(routev3.FilterConfig)
	if err := config.UnmarshalTo(fc); err != nil {
		return nil, err
	}
	ts := new(xdstypev3.TypedStruct)
	if err := fc.GetConfig().UnmarshalTo(ts); err != nil {
		return nil, err
	}
	return newPerRoute(ts.GetValue())
}

func value(t testing.TB, fields map[string]any) *structpb.Struct {
	t.Helper()
	v, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// routeTo is a table with /cached (route config fields), /plain.
func routeTable(t testing.TB, fields map[string]any) *router.Table {
	t.Helper()
	if errs := checkValue(value(t, fields)); len(errs) > 0 {
		t.Fatalf("check: %v", errs)
	}
	ts, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: TypeURL, Value: value(t, fields)})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := anypb.New(&routev3.FilterConfig{Config: ts, IsOptional: true})
	if err != nil {
		t.Fatal(err)
	}
	route := func(prefix string, per map[string]*anypb.Any) *routev3.Route {
		return &routev3.Route{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			TypedPerFilterConfig: per,
		}
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"},
		Routes: []*routev3.Route{route("/cached", map[string]*anypb.Any{"cache": fc}), route("/plain", nil)},
	}}}
	tbl, err := router.Compile(rc, perRouteCompiler{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// backend is an upstream that counts its requests and answers with the
// headers its test sets (304 to a matching If-None-Match when etag is set).
type backend struct {
	mu       sync.Mutex
	calls    atomic.Int64
	header   http.Header
	body     string
	status   int
	gate     chan struct{} // when not nil, each request waits for it to close
	lastSeen http.Header
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request, _ *router.Route) {
	b.calls.Add(1)
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	b.lastSeen = r.Header.Clone()
	for k, vs := range b.header {
		for _, v := range vs {
			w.Header().Add(k, v) // canonical names, as net/http reads them
		}
	}
	status, body := cmp(b.status, 200), b.body+" "+r.Header.Get("Accept-Language")
	b.mu.Unlock()
	if etag := w.Header().Get("ETag"); etag != "" && r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func cmp(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

type harness struct {
	t   *testing.T
	tbl *router.Table
	f   *Filter
	h   httpfilter.Handler
	be  *backend
	now time.Time
	mu  sync.Mutex
}

func newHarness(t *testing.T, route map[string]any, be *backend) *harness {
	t.Helper()
	f, err := newFilter("cache", value(t, map[string]any{"max_cache_bytes": 1 << 20}), httpfilter.Env{Stats: new(httpfilter.Stats)})
	if err != nil {
		t.Fatal(err)
	}
	hs := &harness{t: t, tbl: routeTable(t, route), f: f.(*Filter), be: be, now: time.Unix(1_700_000_000, 0)}
	hs.f.now = func() time.Time { hs.mu.Lock(); defer hs.mu.Unlock(); return hs.now }
	hs.h = f.Wrap(be)
	return hs
}

func (hs *harness) advance(d time.Duration) { hs.mu.Lock(); hs.now = hs.now.Add(d); hs.mu.Unlock() }

func (hs *harness) get(path string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "http://example.com"+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, r, hs.tbl.Match(r))
	return w
}

// expect sends a request and checks its X-Cache and the backend's count.
func (hs *harness) expect(path, xcache string, calls int64, header ...string) *httptest.ResponseRecorder {
	hs.t.Helper()
	w := hs.get(path, header...)
	if got := w.Header().Get("X-Cache"); got != xcache || hs.be.calls.Load() != calls {
		hs.t.Fatalf("GET %s %v: X-Cache %q, %d backend calls; want %q, %d (status %d, headers %v)",
			path, header, got, hs.be.calls.Load(), xcache, calls, w.Code, w.Header())
	}
	return w
}

// TestHitMiss: a response with max-age is served from the cache until it
// is stale, with Age; a route without caching is not touched.
func TestHitMiss(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "hello"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached", Miss, 1)
	hs.advance(10 * time.Second)
	w := hs.expect("/cached", Hit, 1)
	if w.Header().Get("Age") != "10" || w.Body.String() != "hello " || w.Code != 200 {
		t.Errorf("hit: Age %q, body %q, status %d", w.Header().Get("Age"), w.Body.String(), w.Code)
	}
	hs.expect("/cached?a=1", Miss, 2)
	hs.advance(60 * time.Second)
	hs.expect("/cached", Miss, 3)
	hs.expect("/plain", "", 4)
	hs.expect("/plain", "", 5)
}

// TestNotStored: no-store, private, no explicit freshness (heuristics
// off), Set-Cookie, Vary: * and a 500 are not stored; a request with
// no-store or no-cache is forwarded.
func TestNotStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
	}{
		{"no-store", http.Header{"Cache-Control": {"no-store, max-age=60"}}, 0},
		{"private", http.Header{"Cache-Control": {"private, max-age=60"}}, 0},
		{"no freshness", http.Header{"Last-Modified-Not": {"x"}}, 0},
		{"set-cookie", http.Header{"Cache-Control": {"max-age=60"}, "Set-Cookie": {"a=b"}}, 0},
		{"vary star", http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"*"}}, 0},
		{"500", http.Header{"Cache-Control": {"max-age=60"}}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hs := newHarness(t, map[string]any{}, &backend{header: tc.header, status: tc.status})
			hs.expect("/cached", Miss, 1)
			hs.expect("/cached", Miss, 2)
		})
	}
	t.Run("request no-store and no-cache", func(t *testing.T) {
		t.Parallel()
		hs := newHarness(t, map[string]any{}, &backend{header: http.Header{"Cache-Control": {"max-age=60"}}})
		hs.expect("/cached", "", 1, "Cache-Control", "no-store")
		hs.expect("/cached", Miss, 2)
		hs.expect("/cached", Miss, 3, "Cache-Control", "no-cache")
		hs.expect("/cached", Hit, 3)
	})
}

// TestTTLOverride: the route's TTL gives a response without freshness
// headers one.
func TestTTLOverride(t *testing.T) {
	t.Parallel()
	hs := newHarness(t, map[string]any{"ttl_seconds": 5}, &backend{})
	hs.expect("/cached", Miss, 1)
	hs.expect("/cached", Hit, 1)
	hs.advance(5 * time.Second)
	hs.expect("/cached", Miss, 2)
}

// TestVary: one variant per value of the headers a response varies on; a
// header outside allowed_vary_headers is not stored.
func TestVary(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}, "Vary": {"Accept-Language"}}, body: "hi"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached", Miss, 1, "Accept-Language", "en")
	if w := hs.expect("/cached", Miss, 2, "Accept-Language", "fr"); w.Body.String() != "hi fr" {
		t.Errorf("fr variant: %q", w.Body.String())
	}
	if w := hs.expect("/cached", Hit, 2, "Accept-Language", "en"); w.Body.String() != "hi en" {
		t.Errorf("en variant: %q", w.Body.String())
	}
	hs.expect("/cached", Hit, 2, "Accept-Language", "fr")

	hs2 := newHarness(t, map[string]any{"allowed_vary_headers": []any{"accept-encoding"}}, be)
	hs2.expect("/cached", Miss, 3, "Accept-Language", "en")
	hs2.expect("/cached", Miss, 4, "Accept-Language", "en")
}

// TestRevalidation: a stale response with an ETag is revalidated; the
// backend's 304 refreshes it, served as a HIT with its body; a client's
// matching If-None-Match gets a 304 from the cache.
func TestRevalidation(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=10"}, "ETag": {`"v1"`}}, body: "doc"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached", Miss, 1)
	hs.advance(11 * time.Second)
	w := hs.expect("/cached", Hit, 2)
	if w.Code != 200 || w.Body.String() != "doc " || be.lastSeen.Get("If-None-Match") != `"v1"` {
		t.Errorf("revalidated: status %d body %q, backend saw If-None-Match %q", w.Code, w.Body.String(), be.lastSeen.Get("If-None-Match"))
	}
	if n := hs.f.stats.Get("revalidated"); n != 1 {
		t.Errorf("stats: %d revalidated, want 1", n)
	}
	hs.expect("/cached", Hit, 2) // fresh again
	if w := hs.expect("/cached", Hit, 2, "If-None-Match", `W/"v1"`); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("conditional hit: status %d, body %q", w.Code, w.Body.String())
	}
	// A changed resource: the backend answers 200 with a new ETag.
	be.mu.Lock()
	be.header = http.Header{"Cache-Control": {"max-age=10"}, "ETag": {`"v2"`}}
	be.body = "doc2"
	be.mu.Unlock()
	hs.advance(11 * time.Second)
	if w := hs.expect("/cached", Miss, 3); w.Body.String() != "doc2 " {
		t.Errorf("changed: body %q", w.Body.String())
	}
	hs.expect("/cached", Hit, 3)
}

// TestStaleWhileRevalidate: within the stale-while-revalidate window the
// stale response is served (STALE) and refreshed once in the background.
func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		be := &backend{header: http.Header{"Cache-Control": {"max-age=10, stale-while-revalidate=30"}}, body: "b"}
		hs := newHarness(t, map[string]any{}, be)
		hs.expect("/cached", Miss, 1)
		hs.advance(15 * time.Second)
		hs.expect("/cached", Stale, 1)
		synctest.Wait() // the background refresh
		if be.calls.Load() != 2 {
			t.Fatalf("%d backend calls after the refresh, want 2", be.calls.Load())
		}
		if w := hs.expect("/cached", Hit, 2); w.Header().Get("Age") != "0" {
			t.Errorf("refreshed Age %q, want 0", w.Header().Get("Age"))
		}
		hs.advance(45 * time.Second) // past the window: a plain miss
		hs.expect("/cached", Miss, 3)
	})
}

// TestCoalescing: 100 concurrent misses of one key make one upstream
// request; every caller gets the response.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "one", gate: make(chan struct{})}
		hs := newHarness(t, map[string]any{}, be)
		var wg sync.WaitGroup
		results := make([]*httptest.ResponseRecorder, 100)
		for i := range results {
			wg.Go(func() { results[i] = hs.get("/cached") })
		}
		synctest.Wait() // all 100 blocked: one at the backend, 99 on its flight
		close(be.gate)
		wg.Wait()
		if n := be.calls.Load(); n != 1 {
			t.Fatalf("%d upstream requests for 100 concurrent misses, want 1", n)
		}
		if miss, coalesced := hs.f.stats.Get("miss"), hs.f.stats.Get("coalesced"); miss != 1 || coalesced != 99 {
			t.Errorf("stats: %d misses, %d coalesced; want 1, 99", miss, coalesced)
		}
		for i, w := range results {
			if w.Code != 200 || w.Body.String() != "one " {
				t.Fatalf("caller %d: status %d body %q", i, w.Code, w.Body.String())
			}
		}
	})
}

// TestPerPrincipal: responses to authenticated requests are kept per
// caller; a shared route keeps one for all, but only when the response
// allows it (public, s-maxage, must-revalidate).
func TestPerPrincipal(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "me"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached", Miss, 1, "Authorization", "Bearer alice")
	hs.expect("/cached", Miss, 2, "Authorization", "Bearer bob")
	hs.expect("/cached", Hit, 2, "Authorization", "Bearer alice")
	hs.expect("/cached", Miss, 3)

	shared := newHarness(t, map[string]any{"shared": true}, be)
	shared.expect("/cached", Miss, 4, "Authorization", "Bearer alice")
	shared.expect("/cached", Miss, 5, "Authorization", "Bearer alice") // max-age alone: not stored
	be.mu.Lock()
	be.header = http.Header{"Cache-Control": {"public, max-age=60"}}
	be.mu.Unlock()
	shared.expect("/cached", Miss, 6, "Authorization", "Bearer alice")
	shared.expect("/cached", Hit, 6, "Authorization", "Bearer bob")
}

// TestPrincipalKey: the principal an authentication filter established
// (httpfilter.WithAuth) keys the cache like an Authorization header does.
func TestPrincipalKey(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "me"}
	hs := newHarness(t, map[string]any{}, be)
	as := func(principal string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://example.com/cached", nil)
		r = r.WithContext(httpfilter.WithAuth(r.Context(), &httpfilter.Auth{Principal: principal, Kind: httpfilter.AuthAPIKey}))
		w := httptest.NewRecorder()
		hs.h.ServeHTTP(w, r, hs.tbl.Match(r))
		return w
	}
	for i, tc := range []struct {
		principal, want string
		calls           int64
	}{{"alice", Miss, 1}, {"bob", Miss, 2}, {"alice", Hit, 2}, {"bob", Hit, 2}} {
		if w := as(tc.principal); w.Header().Get("X-Cache") != tc.want || be.calls.Load() != tc.calls {
			t.Fatalf("request %d as %s: X-Cache %q, %d calls; want %s, %d", i, tc.principal, w.Header().Get("X-Cache"), be.calls.Load(), tc.want, tc.calls)
		}
	}
	hs.expect("/cached", Miss, 3) // anonymous
}

// TestPurgeAndBudget: purge by prefix; the LRU keeps within its budget.
func TestPurgeAndBudget(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "x"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached/a", Miss, 1)
	hs.expect("/cached/b", Miss, 2)
	if n := hs.f.Purge("/cached/a"); n != 1 {
		t.Errorf("purged %d, want 1", n)
	}
	hs.expect("/cached/a", Miss, 3)
	hs.expect("/cached/b", Hit, 3)

	s := newStore(1000)
	for i := range 20 {
		s.put(&entry{key: strconv.Itoa(i), body: make([]byte, 200), header: http.Header{}})
	}
	entries, used := s.stats()
	if used > 1000 || entries == 0 || s.get("19", nil) == nil || s.get("0", nil) != nil {
		t.Errorf("%d entries, %d bytes: want the most recent within 1000", entries, used)
	}
}

// TestUnsafeInvalidates: a POST to a cached target removes what is
// stored for it; HEAD passes through without touching the store.
func TestUnsafeInvalidates(t *testing.T) {
	t.Parallel()
	be := &backend{header: http.Header{"Cache-Control": {"max-age=60"}}, body: "x"}
	hs := newHarness(t, map[string]any{}, be)
	hs.expect("/cached", Miss, 1)
	r := httptest.NewRequest(http.MethodHead, "http://example.com/cached", nil)
	hs.h.ServeHTTP(httptest.NewRecorder(), r, hs.tbl.Match(r))
	hs.expect("/cached", Hit, 2)
	r = httptest.NewRequest(http.MethodPost, "http://example.com/cached", nil)
	hs.h.ServeHTTP(httptest.NewRecorder(), r, hs.tbl.Match(r))
	hs.expect("/cached", Miss, 4)
	hs.expect("/cached", Hit, 4)
}

// TestNoCacheNoCost: a route without caching passes the writer through
// without allocating.
func TestNoCacheNoCost(t *testing.T) {
	hs := newHarness(t, map[string]any{}, &backend{})
	var got http.ResponseWriter
	h := hs.f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) { got = w }))
	r := httptest.NewRequest(http.MethodGet, "/plain", nil)
	rt := hs.tbl.Match(r)
	w := httptest.NewRecorder()
	allocs := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r, rt) })
	if allocs != 0 || got != w {
		t.Errorf("%v allocations, writer %T; want none, the writer unchanged", allocs, got)
	}
}
