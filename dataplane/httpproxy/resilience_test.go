package httpproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// withResilience rebuilds c with mutate applied to its Cluster resource.
func withResilience(t testing.TB, c *upstream.Cluster, mutate func(*clusterv3.Cluster)) *upstream.Cluster {
	t.Helper()
	cfg := proto.Clone(c.Config()).(*clusterv3.Cluster)
	mutate(cfg)
	out, err := upstream.NewCluster(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(out.Close)
	return out
}

func breakers(th *clusterv3.CircuitBreakers_Thresholds) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
}

// TestRetriesBoundedByCircuitBreaker: a retry over max_retries (or the
// retry budget) is not made: the client gets the last try's answer, the
// backend's, not an overflow.
func TestRetriesBoundedByCircuitBreaker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		threshold *clusterv3.CircuitBreakers_Thresholds
		wantTries int64
	}{
		{"max_retries 0", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(0)}, 1},
		{"max_retries 5", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(5)}, 4},
		{"retry budget 0% minimum 0", &clusterv3.CircuitBreakers_Thresholds{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: wrapperspb.UInt32(0)}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tries atomic.Int64
			backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
				tries.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			cluster := withResilience(t, clusterFor(t, "A", false, addrOf(backend)), breakers(tc.threshold))
			action := forwardTo("A")
			action.Route.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
			_, base := startProxy(t, &Config{
				Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: action}),
				Clusters: map[string]*upstream.Cluster{"A": cluster},
			}, false)
			resp, err := http.Get(base + "/")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get(OverloadedHeader) != "" {
				t.Errorf("status %d %s=%q, want the backend's 503", resp.StatusCode, OverloadedHeader, resp.Header.Get(OverloadedHeader))
			}
			if got := tries.Load(); got != tc.wantTries {
				t.Errorf("%d tries, want %d", got, tc.wantTries)
			}
			if r := cluster.Breaker().Status().Retries; r != 0 {
				t.Errorf("%d retries still counted active", r)
			}
		})
	}
}

// TestMaxConnectionsOverflow: a request that would need a connection over
// max_connections is answered 503 at once, naming the limit.
func TestMaxConnectionsOverflow(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var held atomic.Int64
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held.Add(1)
			<-release
		}
	})
	cluster := withResilience(t, clusterFor(t, "A", false, addrOf(backend)), breakers(&clusterv3.CircuitBreakers_Thresholds{
		MaxConnections: wrapperspb.UInt32(1)}))
	h := NewHandler(nil)
	h.Store(&Config{Routes: table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": cluster}})
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x/hold", nil))
		done <- rec.Code
	}()
	// Poll, with a deadline, until the first request holds the only connection.
	for deadline := time.Now().Add(30 * time.Second); held.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the backend")
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x/other", nil))
	if rec.Code != 503 || rec.Header().Get(OverloadedHeader) != upstream.LimitConnections {
		t.Errorf("second request: %d %s=%q, want 503 max_connections", rec.Code, OverloadedHeader, rec.Header().Get(OverloadedHeader))
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("held request: %d", code)
	}
	// The connection is pooled again: the next request reuses it.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://x/after", nil))
	if rec.Code != 200 {
		t.Errorf("after the held request: %d", rec.Code)
	}
}

// BenchmarkProxyResilience is BenchmarkProxy with a circuit breaker and
// outlier detection on the cluster: the difference is their cost.
func BenchmarkProxyResilience(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world\n")
	})
	cluster := withResilience(b, clusterFor(b, "A", false, addrOf(backend)), func(c *clusterv3.Cluster) {
		breakers(&clusterv3.CircuitBreakers_Thresholds{MaxRequests: wrapperspb.UInt32(1 << 20),
			MaxConnections: wrapperspb.UInt32(1 << 20)})(c)
		c.OutlierDetection = &clusterv3.OutlierDetection{}
	})
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   table(b, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": cluster},
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "http://bench.local/path?x=1", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}
