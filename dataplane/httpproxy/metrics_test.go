package httpproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshgate/meshgate/dataplane/metrics"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestRequestMetrics: each request is counted once under its listener,
// route, cluster and code class, with its body sizes; a request no route
// matched is counted with empty route and cluster labels.
func TestRequestMetrics(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/orders/missing" {
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = io.WriteString(w, "12345")
	})
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewProxy(reg)
	routes := table(t, &routev3.Route{Name: "orders", Match: prefix("/orders"), Action: forwardTo("A")})
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   routes,
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
		Metrics:  m.Listener("edge", routes),
	})
	cases := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/orders/1", "", 200},
		{"POST", "/orders/2", "abcdefgh", 200},
		{"GET", "/orders/missing", "", 404},
		{"GET", "/nothing", "", 404},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		h.ServeHTTP(rec, httptest.NewRequest(c.method, "http://shop"+c.path, body))
		if rec.Code != c.status {
			t.Fatalf("%s %s: status %d, want %d", c.method, c.path, rec.Code, c.status)
		}
	}
	want := `
# HELP meshgate_proxy_requests_total Requests served, by listener, route, destination cluster and response code class.
# TYPE meshgate_proxy_requests_total counter
meshgate_proxy_requests_total{cluster="",code_class="4xx",listener="edge",route=""} 1
meshgate_proxy_requests_total{cluster="A",code_class="2xx",listener="edge",route="orders"} 2
meshgate_proxy_requests_total{cluster="A",code_class="4xx",listener="edge",route="orders"} 1
# HELP meshgate_proxy_requests_in_flight Requests being served, by listener and route.
# TYPE meshgate_proxy_requests_in_flight gauge
meshgate_proxy_requests_in_flight{listener="edge",route=""} 0
meshgate_proxy_requests_in_flight{listener="edge",route="orders"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meshgate_proxy_requests_total", "meshgate_proxy_requests_in_flight"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.RequestDurations(), "meshgate_proxy_request_duration_seconds"); n != 3 {
		t.Errorf("%d duration series, want 3", n)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			if f.GetName() == "meshgate_proxy_request_size_bytes" && labelValue(s.GetLabel(), "route") == "orders" {
				if got := s.GetHistogram().GetSampleSum(); got != 8 {
					t.Errorf("request bytes of route orders: %v, want 8", got)
				}
			}
			if f.GetName() == "meshgate_proxy_response_size_bytes" && labelValue(s.GetLabel(), "route") == "orders" {
				if got := s.GetHistogram().GetSampleSum(); got != 15 {
					t.Errorf("response bytes of route orders: %v, want 15", got)
				}
			}
		}
	}
}

// TestRequestMetricsAllocateNothing: with metrics, a proxied request
// allocates no more than without them (the children were resolved when the
// configuration was built).
func TestRequestMetricsAllocateNothing(t *testing.T) {
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world\n")
	})
	routes := table(t, &routev3.Route{Name: "all", Match: prefix("/"), Action: forwardTo("A")})
	clusters := map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))}
	allocs := func(cfg *Config) float64 {
		h := NewHandler(nil)
		h.Store(cfg)
		serve := func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "http://bench.local/path", nil))
			if rec.Code != 200 {
				t.Fatalf("status %d", rec.Code)
			}
		}
		serve() // first use: connection, code class child
		return testing.AllocsPerRun(200, serve)
	}
	without := allocs(&Config{Routes: routes, Clusters: clusters})
	m := metrics.NewProxy(prometheus.NewRegistry())
	with := allocs(&Config{Routes: routes, Clusters: clusters, Metrics: m.Listener("l", routes)})
	allowed := without
	if raceEnabled {
		allowed++ // the pool's random drops under the race detector
	}
	if with > allowed {
		t.Errorf("%v allocations per request with metrics, %v without: metrics should allocate nothing", with, without)
	}
}

// BenchmarkProxyMetrics is BenchmarkProxy with request metrics.
func BenchmarkProxyMetrics(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello, world\n")
	})
	routes := table(b, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")})
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   routes,
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(b, "A", false, addrOf(backend))},
		Metrics:  metrics.NewProxy(prometheus.NewRegistry()).Listener("bench", routes),
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

func labelValue(labels []*dto.LabelPair, name string) string {
	for _, l := range labels {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
