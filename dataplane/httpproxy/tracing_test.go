package httpproxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestTracedRequest: with a Tracer, a request gets a server span and its
// upstream attempt a client span, its child, whose trace context the
// upstream receives; a local reply (no route) gets a server span alone.
func TestTracedRequest(t *testing.T) {
	t.Parallel()
	var gotTraceparent string
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		gotTraceparent = r.Header.Get("Traceparent")
		w.WriteHeader(http.StatusAccepted)
	})
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.NewWithExporter(&tracing.Settings{Service: "edge", Cluster: "c", Timeout: tracing.DefaultExportTimeout, Ratio: 1}, exp, tracing.Options{}, nil)
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	route := &routev3.Route{Name: "orders", Match: prefix("/orders"), Action: forwardTo("A")}
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   table(t, route),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
		Tracer:   tr,
	})

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://shop/orders/1", nil))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://shop/nothing", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("status %d", rec.Code)
	}
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (client and server of the forwarded request, server of the 404)", len(spans))
	}
	client, server, local := spans[0], spans[1], spans[2]
	if client.SpanKind != trace.SpanKindClient || server.SpanKind != trace.SpanKindServer || local.SpanKind != trace.SpanKindServer {
		t.Fatalf("span kinds %v %v %v", client.SpanKind, server.SpanKind, local.SpanKind)
	}
	if client.Parent.SpanID() != server.SpanContext.SpanID() {
		t.Error("client span is not the server span's child")
	}
	want := "00-" + client.SpanContext.TraceID().String() + "-" + client.SpanContext.SpanID().String() + "-01"
	if gotTraceparent != want {
		t.Errorf("upstream got traceparent %q, want %q", gotTraceparent, want)
	}
	status := func(s tracetest.SpanStub) int64 {
		for _, kv := range s.Attributes {
			if kv.Key == "http.response.status_code" {
				return kv.Value.AsInt64()
			}
		}
		return 0
	}
	if status(client) != 202 || status(server) != 202 || status(local) != 404 {
		t.Errorf("statuses %d %d %d, want 202 202 404", status(client), status(server), status(local))
	}
	if server.Name != "GET orders" || local.Name != "GET" {
		t.Errorf("span names %q, %q", server.Name, local.Name)
	}
}

// BenchmarkProxyTracing is BenchmarkProxy's request with tracing at 0%, 1%
// and 100% sampling (spans handed to an exporter that discards them): the
// cost of tracing against BenchmarkProxy, where the Tracer is nil.
func BenchmarkProxyTracing(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("hello, world\n"))
	})
	for _, percent := range []float64{0, 1, 100} {
		b.Run(fmt.Sprintf("sampling=%g%%", percent), func(b *testing.B) {
			tr := tracing.NewWithExporter(&tracing.Settings{Service: "bench", Cluster: "c", Timeout: tracing.DefaultExportTimeout, Ratio: percent / 100},
				tracetest.NewNoopExporter(), tracing.Options{}, nil)
			b.Cleanup(func() { _ = tr.Close(context.Background()) })
			h := NewHandler(nil)
			h.Store(&Config{
				Routes:   table(b, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
				Clusters: map[string]*upstream.Cluster{"A": clusterFor(b, "A", false, addrOf(backend))},
				Tracer:   tr,
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
		})
	}
}

// TestRouteTracingSampling: a route's Route.tracing replaces the
// connection manager's sampling for the requests of that route that start
// a trace (random_sampling 100% in a listener at 0%: traced; overall 0%
// in a listener at 100%: not), the other routes keep the listener's, and a
// request with a sampled trace context is traced on any route.
func TestRouteTracingSampling(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	percent := func(p uint32) *typev3.FractionalPercent { return &typev3.FractionalPercent{Numerator: p} }
	routes := []*routev3.Route{
		{Name: "always", Match: prefix("/always"), Action: forwardTo("A"), Tracing: &routev3.Tracing{RandomSampling: percent(100)}},
		{Name: "never", Match: prefix("/never"), Action: forwardTo("A"), Tracing: &routev3.Tracing{OverallSampling: percent(0)}},
		{Name: "listener", Match: prefix("/"), Action: forwardTo("A")},
	}
	tests := []struct {
		name          string
		random        float64 // the listener's random_sampling
		path, parent  string
		wantSpans     int
		wantRouteName string
	}{
		{"route at 100% in a listener at 0%", 0, "/always", "", 2, "GET always"},
		{"the listener's 0% elsewhere", 0, "/other", "", 0, ""},
		{"route at overall 0% in a listener at 100%", 1, "/never", "", 0, ""},
		{"the listener's 100% elsewhere", 1, "/other", "", 2, "GET listener"},
		{"a sampled parent on a route at 0%", 1, "/never", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 2, "GET never"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			exp := tracetest.NewInMemoryExporter()
			tr := tracing.NewWithExporter(&tracing.Settings{Service: "edge", Cluster: "c", Timeout: tracing.DefaultExportTimeout,
				Ratio: tt.random, Random: tt.random, Overall: 1}, exp, tracing.Options{}, nil)
			t.Cleanup(func() { _ = tr.Close(context.Background()) })
			h := NewHandler(nil)
			h.Store(&Config{
				Routes:   table(t, routes...),
				Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
				Tracer:   tr,
			})
			req := httptest.NewRequest("GET", "http://shop"+tt.path, nil)
			if tt.parent != "" {
				req.Header.Set("Traceparent", tt.parent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			if err := tr.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans := exp.GetSpans()
			if len(spans) != tt.wantSpans {
				t.Fatalf("%d spans, want %d", len(spans), tt.wantSpans)
			}
			if tt.wantSpans > 0 && spans[1].Name != tt.wantRouteName {
				t.Errorf("server span %q, want %q", spans[1].Name, tt.wantRouteName)
			}
		})
	}
}
