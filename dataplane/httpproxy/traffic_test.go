package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// flaky is a backend that fails its first failures requests (by path: each
// test path counts on its own) with status, or by resetting the connection
// when status is 0, then echoes.
type flaky struct {
	mu       sync.Mutex
	attempts map[string]int
	bodies   []string
}

func (f *flaky) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[path]
}

func newFlaky(t *testing.T) (*flaky, string) {
	f := &flaky{attempts: map[string]int{}}
	srv := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		failures, _ := strconv.Atoi(q.Get("failures"))
		status, _ := strconv.Atoi(q.Get("status"))
		f.mu.Lock()
		f.attempts[r.URL.Path]++
		n := f.attempts[r.URL.Path]
		f.bodies = append(f.bodies, string(body))
		f.mu.Unlock()
		if n <= failures {
			if status == 0 {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					_ = conn.(*net.TCPConn).SetLinger(0)
					_ = conn.Close()
				}
				return
			}
			w.WriteHeader(status)
			return
		}
		_, _ = io.WriteString(w, "ok after "+strconv.Itoa(n))
	})
	return f, addrOf(srv)
}

// retryRoute forwards to cluster A with the retry policy p.
func retryRoute(p *routev3.RetryPolicy) *routev3.Route {
	return &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "A"},
		RetryPolicy:      p,
	}}}
}

// fastBackoff keeps retries quick: the tests count tries, not time.
var fastBackoff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}

func TestRetries(t *testing.T) {
	t.Parallel()
	f, addr := newFlaky(t)
	codes500 := &routev3.RetryPolicy{RetryOn: "connect-failure,reset,retriable-status-codes", RetriableStatusCodes: []uint32{500},
		NumRetries: wrapperspb.UInt32(3), RetryBackOff: fastBackoff}
	gatewayErrors := &routev3.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{500, 502, 503, 504},
		NumRetries: wrapperspb.UInt32(2), RetryBackOff: fastBackoff}
	none := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
	tests := []struct {
		name     string
		policy   *routev3.RetryPolicy
		query    string
		status   int
		attempts int
	}{
		{"succeeds after two retries", codes500, "failures=2&status=500", 200, 3},
		{"fails when more retries are needed than attempts", codes500, "failures=4&status=500", 500, 4},
		{"a status not listed is not retried", codes500, "failures=2&status=503", 503, 1},
		{"a reset is retried", codes500, "failures=1&status=0", 200, 2},
		{"every listed code: 502", gatewayErrors, "failures=1&status=502", 200, 2},
		{"every listed code: 504 exhausted", gatewayErrors, "failures=3&status=504", 504, 3},
		{"a reset is not retried without reset", gatewayErrors, "failures=1&status=0", 502, 1},
		{"num_retries 0", none, "failures=1&status=500", 500, 1},
		{"the default is one retry", &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: fastBackoff}, "failures=2&status=503", 503, 2},
		{"5xx covers every 5xx", &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: fastBackoff}, "failures=1&status=501", 200, 2},
		{"gateway-error does not cover 500", &routev3.RetryPolicy{RetryOn: "gateway-error", RetryBackOff: fastBackoff}, "failures=1&status=500", 500, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, proxy := startProxy(t, &Config{
				Routes:   table(t, retryRoute(tt.policy)),
				Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addr)},
			}, false)
			path := "/case" + strconv.Itoa(i)
			r := get(t, proxy+path+"?"+tt.query)
			if r.status != tt.status {
				t.Errorf("status = %d (%q), want %d", r.status, r.body, tt.status)
			}
			if got := f.count(path); got != tt.attempts {
				t.Errorf("backend saw %d tries, want %d", got, tt.attempts)
			}
		})
	}
}

func TestRetryGoesToAnotherEndpoint(t *testing.T) {
	t.Parallel()
	var badHits atomic.Int64
	bad := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		badHits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	good := newEcho(t, "good", false)
	_, proxy := startProxy(t, &Config{
		Routes: table(t, retryRoute(&routev3.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{503},
			NumRetries: wrapperspb.UInt32(1), RetryBackOff: fastBackoff,
			RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}},
			HostSelectionRetryMaxAttempts: 3})),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(bad), addrOf(good))},
	}, false)
	const requests = 10
	for range requests {
		if r := get(t, proxy+"/"); r.status != 200 || r.echo.Backend != "good" {
			t.Fatalf("status %d from %q, want 200 from good: the retry must go to the other endpoint", r.status, r.echo.Backend)
		}
	}
	if n := badHits.Load(); n == 0 || n > requests {
		t.Errorf("the failing endpoint saw %d tries, want 1-%d", n, requests)
	}
}

func TestRetryReplaysTheBody(t *testing.T) {
	t.Parallel()
	policy := &routev3.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{500},
		NumRetries: wrapperspb.UInt32(2), RetryBackOff: fastBackoff}
	tests := []struct {
		name     string
		body     string
		status   int
		attempts int
	}{
		{"a short body is sent again", "hello, retries", 200, 2},
		{"a body over the limit is not retried", strings.Repeat("x", ReplayBodyLimit+1), 500, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, addr := newFlaky(t)
			_, proxy := startProxy(t, &Config{
				Routes:   table(t, retryRoute(policy)),
				Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addr)},
			}, false)
			path := "/body" + strconv.Itoa(i)
			req, _ := http.NewRequestWithContext(context.Background(), "POST", proxy+path+"?failures=1&status=500", strings.NewReader(tt.body))
			r := do(t, noRedirectClient(), req)
			if r.status != tt.status || f.count(path) != tt.attempts {
				t.Fatalf("status %d after %d tries, want %d after %d", r.status, f.count(path), tt.status, tt.attempts)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for i, b := range f.bodies {
				if b != tt.body {
					t.Errorf("try %d got a body of %d bytes, want %d", i, len(b), len(tt.body))
				}
			}
		})
	}
}

// TestBackendRequestTimeout: per_try_timeout bounds each try: alone it
// answers 504, with a retry the next try succeeds. The backend holds its
// first request until the test ends; nothing here measures time.
func TestBackendRequestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var tries sync.Map // path → *atomic.Int64
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := tries.LoadOrStore(r.URL.Path, new(atomic.Int64))
		if n.(*atomic.Int64).Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	perTry := durationpb.New(50 * time.Millisecond)
	tests := []struct {
		name   string
		policy *routev3.RetryPolicy
		status int
		tries  int64
	}{
		{"per-try timeout alone", &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0), PerTryTimeout: perTry}, 504, 1},
		{"per-try timeout then a retry", &routev3.RetryPolicy{RetryOn: "reset", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: perTry, RetryBackOff: fastBackoff}, 200, 2},
		{"a timeout is not retried without reset", &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1), PerTryTimeout: perTry}, 504, 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			route := retryRoute(tt.policy)
			route.GetRoute().Timeout = durationpb.New(0) // per try only
			_, proxy := startProxy(t, &Config{
				Routes:   table(t, route),
				Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
			}, false)
			path := "/timeout" + strconv.Itoa(i)
			r := get(t, proxy+path)
			n, _ := tries.Load(path)
			if r.status != tt.status || n.(*atomic.Int64).Load() != tt.tries {
				t.Fatalf("status %d after %d tries, want %d after %d", r.status, n.(*atomic.Int64).Load(), tt.status, tt.tries)
			}
		})
	}
}

// TestRetrySleep: the backoff wait is exact in virtual time, and ends early
// when the request is cancelled or the route deadline would pass.
func TestRetrySleep(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !sleep(t.Context(), 100*time.Millisecond, time.Time{}) {
			t.Fatal("sleep without deadline returned false")
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("slept %v, want 100ms", d)
		}
		start = time.Now()
		if sleep(t.Context(), 100*time.Millisecond, start.Add(50*time.Millisecond)) {
			t.Error("sleep past the deadline returned true")
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("sleep past the deadline waited %v, want 0", d)
		}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(30*time.Millisecond, cancel)
		start = time.Now()
		if sleep(ctx, time.Second, time.Time{}) {
			t.Error("sleep of a cancelled request returned true")
		}
		if d := time.Since(start); d != 30*time.Millisecond {
			t.Errorf("cancelled sleep took %v, want 30ms", d)
		}
	})
}

// mirrorRoute forwards to A and mirrors to M (fraction per hundred; 100:
// no runtime_fraction).
func mirrorRoute(percent uint32) *routev3.Route {
	mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: "M"}
	if percent < 100 {
		mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: percent}}
	}
	return &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier:      &routev3.RouteAction_Cluster{Cluster: "A"},
		RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{mp},
	}}}
}

func TestMirrorDeliversACopy(t *testing.T) {
	t.Parallel()
	type seen struct{ host, path, body string }
	mirrored := make(chan seen, 4)
	mirror := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mirrored <- seen{r.Host, r.URL.RequestURI(), string(body)}
		w.WriteHeader(http.StatusTeapot) // ignored
	})
	primary := newEcho(t, "primary", false)
	_, proxy := startProxy(t, &Config{
		Routes: table(t, mirrorRoute(100)),
		Clusters: map[string]*upstream.Cluster{
			"A": clusterFor(t, "A", false, addrOf(primary)),
			"M": clusterFor(t, "M", false, addrOf(mirror)),
		},
	}, false)
	req, _ := http.NewRequestWithContext(context.Background(), "POST", proxy+"/orders?id=7", strings.NewReader("payload"))
	req.Host = "shop.example.com:8080"
	r := do(t, noRedirectClient(), req)
	if r.status != 200 || r.echo.Backend != "primary" || r.echo.Body != "payload" || r.echo.Host != "shop.example.com:8080" {
		t.Fatalf("primary answer: %d %+v", r.status, r.echo)
	}
	select {
	case s := <-mirrored:
		want := seen{"shop.example.com-shadow:8080", "/orders?id=7", "payload"}
		if s != want {
			t.Errorf("mirror got %+v, want %+v", s, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no mirrored request")
	}
}

// TestMirrorNeverDelaysThePrimary: a mirror that never answers does not
// hold the primary responses, and copies beyond the in-flight bound are
// dropped rather than queued.
func TestMirrorNeverDelaysThePrimary(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var arrived atomic.Int64
	mirror := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	primary := newEcho(t, "primary", false)
	h, proxy := startProxy(t, &Config{
		Routes: table(t, mirrorRoute(100)),
		Clusters: map[string]*upstream.Cluster{
			"A": clusterFor(t, "A", false, addrOf(primary)),
			"M": clusterFor(t, "M", false, addrOf(mirror)),
		},
	}, false)
	// Fill every slot but one, as copies in flight would.
	for range MaxMirrorsInFlight - 1 {
		h.mirrorSlots <- struct{}{}
	}
	for range 3 {
		if r := get(t, proxy+"/"); r.status != 200 || r.echo.Backend != "primary" {
			t.Fatalf("primary answer: %d %+v", r.status, r.echo)
		}
	}
	if n := len(h.mirrorSlots); n != MaxMirrorsInFlight {
		t.Errorf("%d mirror slots taken, want all %d (one copy in flight, two dropped)", n, MaxMirrorsInFlight)
	}
}

func TestMirrorShare(t *testing.T) {
	t.Parallel()
	tbl := table(t, mirrorRoute(20))
	rt := tbl.Match(httptestRequest(t))
	mirrors := rt.Mirrors()
	if len(mirrors) != 1 || mirrors[0].Cluster != "M" {
		t.Fatalf("mirrors = %+v", mirrors)
	}
	n := 0
	for rnd := range uint64(1000) {
		if mirrors[0].Mirrors(rnd) {
			n++
		}
	}
	if n != 200 {
		t.Errorf("20%% mirrors %d of 1000 draws, want 200", n)
	}
}

func httptestRequest(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(context.Background(), "GET", "http://x/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestShadowHost(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"shop.example.com":      "shop.example.com-shadow",
		"shop.example.com:8080": "shop.example.com-shadow:8080",
		"[::1]:80":              "[::1]-shadow:80",
	} {
		if got := shadowHost(in); got != want {
			t.Errorf("shadowHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWeightedClusterHeaders: each weighted cluster's header lists apply to
// the requests it gets and their responses only (backendRefs[].filters).
func TestWeightedClusterHeaders(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a", false), newEcho(t, "b", false)
	set := func(name, value string) []*corev3.HeaderValueOption {
		return []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: name, Value: value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	}
	route := &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "A", Weight: wrapperspb.UInt32(1), RequestHeadersToAdd: set("backend", "a"), RequestHeadersToRemove: []string{"x-drop"}},
			{Name: "B", Weight: wrapperspb.UInt32(1), RequestHeadersToAdd: set("backend", "b"), ResponseHeadersToAdd: set("x-served-by", "b")},
		}}},
	}}}
	_, proxy := startProxy(t, &Config{
		Routes: table(t, route),
		Clusters: map[string]*upstream.Cluster{
			"A": clusterFor(t, "A", false, addrOf(a)),
			"B": clusterFor(t, "B", false, addrOf(b)),
		},
	}, false)
	seen := map[string]bool{}
	for range 40 {
		r := get(t, proxy+"/", "Backend", "client", "X-Drop", "1")
		if got := r.echo.Header.Values("Backend"); len(got) != 1 || got[0] != r.echo.Backend {
			t.Fatalf("backend %q got Backend %q", r.echo.Backend, got)
		}
		wantServedBy := map[string]string{"a": "", "b": "b"}[r.echo.Backend]
		if got := r.header.Get("X-Served-By"); got != wantServedBy {
			t.Errorf("backend %q: X-Served-By %q, want %q", r.echo.Backend, got, wantServedBy)
		}
		if r.echo.Backend == "a" && r.echo.Header.Get("X-Drop") != "" {
			t.Error("backend a got X-Drop")
		}
		seen[r.echo.Backend] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("backends seen: %v, want both", seen)
	}
}
