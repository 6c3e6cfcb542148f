package httpproxy

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// ringHashCluster is cluster "A" over three echo backends (a, b, c) with
// lb_policy RING_HASH.
func ringHashCluster(t *testing.T) *upstream.Cluster {
	t.Helper()
	plain := clusterFor(t, "A", false, addrOf(newEcho(t, "a", false)), addrOf(newEcho(t, "b", false)), addrOf(newEcho(t, "c", false)))
	c := proto.Clone(plain.Config()).(*clusterv3.Cluster)
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	cl, err := upstream.NewCluster(c, nil)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func hashRoute(hp *routev3.RouteAction_HashPolicy) *routev3.Route {
	return &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "A"},
		HashPolicy:       []*routev3.RouteAction_HashPolicy{hp},
	}}}
}

// TestHashPolicyHeader: a ring hash cluster sends every request with the
// same X-User to one backend, and different users to several.
func TestHashPolicyHeader(t *testing.T) {
	t.Parallel()
	_, proxy := startProxy(t, &Config{
		Routes: table(t, hashRoute(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}})),
		Clusters: map[string]*upstream.Cluster{"A": ringHashCluster(t)},
	}, false)
	first := get(t, proxy+"/", "X-User", "alice").echo.Backend
	for range 50 {
		if got := get(t, proxy+"/", "X-User", "alice").echo.Backend; got != first {
			t.Fatalf("alice went to %s, then %s", first, got)
		}
	}
	seen := map[string]bool{}
	for i := range 60 {
		seen[get(t, proxy+"/", "X-User", "user-"+strconv.Itoa(i)).echo.Backend] = true
	}
	if len(seen) < 2 {
		t.Errorf("60 users all went to %v, want them spread", seen)
	}
}

// TestHashPolicyCookieSetWhenAbsent: a request without the hash cookie
// gets one (Max-Age from the ttl, the path), and the requests that carry it
// all go to the backend of the first.
func TestHashPolicyCookieSetWhenAbsent(t *testing.T) {
	t.Parallel()
	_, proxy := startProxy(t, &Config{
		Routes: table(t, hashRoute(&routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
			Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "session", Ttl: durationpb.New(time.Hour), Path: "/"}}})),
		Clusters: map[string]*upstream.Cluster{"A": ringHashCluster(t)},
	}, false)
	r := get(t, proxy+"/")
	setCookie := r.header.Get("Set-Cookie")
	if !strings.HasPrefix(setCookie, "session=") || !strings.Contains(setCookie, "Max-Age=3600") || !strings.Contains(setCookie, "Path=/") {
		t.Fatalf("Set-Cookie = %q, want session=...; Path=/; Max-Age=3600", setCookie)
	}
	cookie := strings.SplitN(setCookie, ";", 2)[0]
	first := r.echo.Backend
	for range 30 {
		r := get(t, proxy+"/", "Cookie", cookie)
		if r.echo.Backend != first {
			t.Fatalf("cookie %s went to %s, then %s", cookie, first, r.echo.Backend)
		}
		if r.header.Get("Set-Cookie") != "" {
			t.Fatalf("a request with the cookie got another: %q", r.header.Get("Set-Cookie"))
		}
	}
}

// TestRetriesOnlyListedMethods: with retriable_request_headers on :method,
// a GET is retried and a POST is not.
func TestRetriesOnlyListedMethods(t *testing.T) {
	t.Parallel()
	f, addr := newFlaky(t)
	policy := &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2), RetryBackOff: fastBackoff,
		RetriableRequestHeaders: []*routev3.HeaderMatcher{{Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringExact("GET")}}}}
	_, proxy := startProxy(t, &Config{
		Routes:   table(t, retryRoute(policy)),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addr)},
	}, false)
	if r := get(t, proxy+"/get?failures=1&status=503"); r.status != 200 || f.count("/get") != 2 {
		t.Errorf("GET: status %d after %d tries, want 200 after 2", r.status, f.count("/get"))
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", proxy+"/post?failures=1&status=503", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.DefaultClient, req); r.status != 503 || f.count("/post") != 1 {
		t.Errorf("POST: status %d after %d tries, want 503 after 1 (not retried)", r.status, f.count("/post"))
	}
}

// TestRouteIdleTimeout: a request whose upstream sends nothing for the
// route's idle_timeout gets 504 "stream timeout".
func TestRouteIdleTimeout(t *testing.T) {
	t.Parallel()
	hang := newBackend(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	_, proxy := startProxy(t, &Config{
		Routes: table(t, &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "A"},
			IdleTimeout:      durationpb.New(50 * time.Millisecond),
		}}}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(hang))},
	}, false)
	if r := get(t, proxy+"/"); r.status != http.StatusGatewayTimeout || r.body != bodyStreamIdle {
		t.Errorf("status %d %q, want 504 %q", r.status, r.body, bodyStreamIdle)
	}
}

func stringExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// TestAttemptCountHeaders: with include_request_attempt_count each try
// tells the upstream its number, and with include_attempt_count_in_response
// the client learns how many tries its response took; without them
// neither header is set.
func TestAttemptCountHeaders(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string][]string{}
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = append(seen[r.URL.Path], r.Header.Get(router.AttemptCountHeader))
		tries := len(seen[r.URL.Path])
		mu.Unlock()
		failures, _ := strconv.Atoi(r.URL.Query().Get("failures"))
		if tries <= failures {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	policy := &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3), RetryBackOff: fastBackoff}
	for _, tc := range []struct {
		name         string
		counts       bool
		path         string
		failures     int
		wantResponse string
		wantUpstream []string
		wantStatus   int
	}{
		{name: "retried twice", counts: true, path: "/a", failures: 2, wantResponse: "3", wantUpstream: []string{"1", "2", "3"}, wantStatus: 200},
		{name: "first try", counts: true, path: "/b", wantResponse: "1", wantUpstream: []string{"1"}, wantStatus: 200},
		{name: "retries exhausted", counts: true, path: "/c", failures: 9, wantResponse: "4", wantUpstream: []string{"1", "2", "3", "4"}, wantStatus: 503},
		{name: "not asked", path: "/d", failures: 1, wantResponse: "", wantUpstream: []string{"", ""}, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vh := &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{retryRoute(policy)},
				IncludeRequestAttemptCount: tc.counts, IncludeAttemptCountInResponse: tc.counts}
			tbl, err := router.Compile(&routev3.RouteConfiguration{Name: "test", VirtualHosts: []*routev3.VirtualHost{vh}}, nil)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			_, proxy := startProxy(t, &Config{Routes: tbl, Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))}}, false)
			r := get(t, proxy+tc.path+"?failures="+strconv.Itoa(tc.failures))
			if r.status != tc.wantStatus || r.header.Get(router.AttemptCountHeader) != tc.wantResponse {
				t.Errorf("status %d, %s %q; want %d, %q", r.status, router.AttemptCountHeader, r.header.Get(router.AttemptCountHeader), tc.wantStatus, tc.wantResponse)
			}
			if _, present := r.header[router.AttemptCountHeader]; present != tc.counts {
				t.Errorf("response header present: %v, want %v", present, tc.counts)
			}
			mu.Lock()
			got := slices.Clone(seen[tc.path])
			mu.Unlock()
			if !slices.Equal(got, tc.wantUpstream) {
				t.Errorf("upstream saw %s %q, want %q", router.AttemptCountHeader, got, tc.wantUpstream)
			}
		})
	}
}
