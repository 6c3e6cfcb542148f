package tracing

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/dataplane/peer"
)

func grpcTracing(t *testing.T, random *typev3.Percent) *hcmv3.HttpConnectionManager_Tracing {
	t.Helper()
	cfg, err := anypb.New(&tracev3.OpenTelemetryConfig{
		ServiceName: "orders",
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector"}},
			Timeout:         durationpb.New(2e9),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: random,
		CustomTags: []*tracingtypev3.CustomTag{{Tag: "meshgate.role", Type: &tracingtypev3.CustomTag_Literal_{
			Literal: &tracingtypev3.CustomTag_Literal{Value: "sidecar"}}}},
		Provider: &tracev3.Tracing_Http{Name: ProviderName, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg}},
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	httpCfg, _ := anypb.New(&tracev3.OpenTelemetryConfig{HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
		Uri: "http://127.0.0.1:4318/v1/traces", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "c"},
	}}})
	tests := []struct {
		name    string
		in      func(*testing.T) *hcmv3.HttpConnectionManager_Tracing
		want    *Settings
		wantErr string
	}{
		{name: "none", in: func(*testing.T) *hcmv3.HttpConnectionManager_Tracing { return nil }},
		{
			name: "grpc at 5%",
			in: func(t *testing.T) *hcmv3.HttpConnectionManager_Tracing {
				return grpcTracing(t, &typev3.Percent{Value: 5})
			},
			want: &Settings{Service: "orders", Cluster: "collector", Protocol: GRPC, Timeout: 2e9, Ratio: 0.05, Random: 0.05, Overall: 1,
				Tags: []attribute.KeyValue{attribute.String("meshgate.role", "sidecar")}},
		},
		{
			name: "sampling unset is 100%",
			in:   func(t *testing.T) *hcmv3.HttpConnectionManager_Tracing { return grpcTracing(t, nil) },
			want: &Settings{Service: "orders", Cluster: "collector", Protocol: GRPC, Timeout: 2e9, Ratio: 1, Random: 1, Overall: 1,
				Tags: []attribute.KeyValue{attribute.String("meshgate.role", "sidecar")}},
		},
		{
			name: "random and overall multiply",
			in: func(t *testing.T) *hcmv3.HttpConnectionManager_Tracing {
				tr := grpcTracing(t, &typev3.Percent{Value: 50})
				tr.OverallSampling = &typev3.Percent{Value: 50}
				tr.CustomTags = nil
				return tr
			},
			want: &Settings{Service: "orders", Cluster: "collector", Protocol: GRPC, Timeout: 2e9, Ratio: 0.25, Random: 0.5, Overall: 0.5},
		},
		{
			name: "http",
			in: func(*testing.T) *hcmv3.HttpConnectionManager_Tracing {
				return &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{
					Name: ProviderName, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: httpCfg}}}
			},
			want: &Settings{Service: "meshgate", Cluster: "c", Protocol: HTTP, URLPath: "/v1/traces", Authority: "127.0.0.1:4318", Timeout: DefaultExportTimeout, Ratio: 1, Random: 1, Overall: 1},
		},
		{
			name: "percentage out of range",
			in: func(t *testing.T) *hcmv3.HttpConnectionManager_Tracing {
				return grpcTracing(t, &typev3.Percent{Value: 101})
			},
			wantErr: "tracing.random_sampling.value: 101 is not a percentage from 0 to 100",
		},
		{
			name: "another provider",
			in: func(t *testing.T) *hcmv3.HttpConnectionManager_Tracing {
				tr := grpcTracing(t, nil)
				tr.Provider.Name = "envoy.tracers.zipkin"
				return tr
			},
			wantErr: `tracing.provider.name: "envoy.tracers.zipkin" not supported`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in(t))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && got.Key() != tc.want.Key()) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// traced serves one request through a server span and one upstream
// attempt, as the proxy does, and returns the header the upstream got.
func traced(tr *Tracer, r *http.Request) http.Header {
	rec := httptest.NewRecorder()
	span, r := tr.StartServer(rec, r)
	span.SetRoute("shop/orders/0", "shop/orders:80")
	out := r.Clone(r.Context())
	attempt := tr.StartClient(r.Context(), out, "shop/orders:80", "127.0.0.3:8080")
	attempt.SetStatus(http.StatusOK)
	attempt.End()
	span.WriteHeader(http.StatusOK)
	span.End()
	return out.Header
}

func newTestTracer(t *testing.T, ratio float64) (*Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr := NewWithExporter(&Settings{Service: "orders", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: ratio,
		Tags: []attribute.KeyValue{attribute.String("meshgate.role", "sidecar")}}, exp, Options{}, nil)
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr, exp
}

func flushed(t *testing.T, tr *Tracer, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.provider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return exp.GetSpans()
}

func attrs(s tracetest.SpanStub) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

func TestSpansAndPropagation(t *testing.T) {
	t.Parallel()
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name      string
		header    map[string]string
		ratio     float64
		wantSpans int
		wantTrace string // "" any
	}{
		{name: "new trace sampled", ratio: 1, wantSpans: 2},
		{name: "new trace not sampled", ratio: 0, wantSpans: 0},
		{name: "W3C parent continued whatever the ratio", ratio: 0, wantSpans: 2,
			header: map[string]string{"traceparent": parent, "tracestate": "vendor=x"}, wantTrace: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{name: "W3C unsampled parent followed", ratio: 1, wantSpans: 0,
			header: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}},
		{name: "B3 single header accepted", ratio: 0, wantSpans: 2,
			header: map[string]string{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}, wantTrace: "80f198ee56343ba864fe8b2a57d3eff7"},
		{name: "B3 multi header accepted", ratio: 0, wantSpans: 2,
			header:    map[string]string{"X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"},
			wantTrace: "80f198ee56343ba864fe8b2a57d3eff7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr, exp := newTestTracer(t, tc.ratio)
			r := httptest.NewRequest("GET", "http://orders/items?x=1", nil)
			r.Header.Set("User-Agent", "curl/8")
			r = r.WithContext(peer.WithIdentity(r.Context(), "spiffe://mesh.local/ns/shop/svc/frontend"))
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			upstream := traced(tr, r)
			spans := flushed(t, tr, exp)
			if len(spans) != tc.wantSpans {
				t.Fatalf("%d spans exported, want %d", len(spans), tc.wantSpans)
			}
			// The upstream always gets a W3C trace context (sampled or not).
			sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(upstream)))
			if !sc.IsValid() {
				t.Fatalf("upstream traceparent %q is not valid", upstream.Get("traceparent"))
			}
			if tc.wantSpans == 0 {
				return
			}
			client, server := spans[0], spans[1]
			if server.SpanKind != trace.SpanKindServer || client.SpanKind != trace.SpanKindClient {
				t.Fatalf("kinds %v, %v", server.SpanKind, client.SpanKind)
			}
			if client.Parent.SpanID() != server.SpanContext.SpanID() || client.SpanContext.TraceID() != server.SpanContext.TraceID() {
				t.Errorf("client span not a child of the server span")
			}
			if sc.SpanID() != client.SpanContext.SpanID() || sc.TraceID() != client.SpanContext.TraceID() {
				t.Errorf("upstream traceparent %s is not the client span %s", upstream.Get("traceparent"), client.SpanContext.SpanID())
			}
			if tc.wantTrace != "" && server.SpanContext.TraceID().String() != tc.wantTrace {
				t.Errorf("trace %s, want the incoming %s", server.SpanContext.TraceID(), tc.wantTrace)
			}
			if tc.header["tracestate"] != "" && upstream.Get("tracestate") != tc.header["tracestate"] {
				t.Errorf("tracestate %q not forwarded", upstream.Get("tracestate"))
			}
			sa, ca := attrs(server), attrs(client)
			for k, v := range map[string]string{
				"http.request.method": "GET", "url.path": "/items", "http.route": "shop/orders/0", "meshgate.route": "shop/orders/0",
				"http.response.status_code": "200", "server.address": "orders", "network.peer.address": "192.0.2.1",
				"user_agent.original": "curl/8", "meshgate.peer.spiffe_id": "spiffe://mesh.local/ns/shop/svc/frontend",
				"meshgate.role": "sidecar",
			} {
				if sa[k] != v {
					t.Errorf("server span %s = %q, want %q", k, sa[k], v)
				}
			}
			for k, v := range map[string]string{
				"meshgate.destination": "shop/orders:80", "meshgate.upstream.endpoint": "127.0.0.3:8080",
				"http.response.status_code": "200", "meshgate.role": "sidecar",
			} {
				if ca[k] != v {
					t.Errorf("client span %s = %q, want %q", k, ca[k], v)
				}
			}
			if server.Name != "GET shop/orders/0" {
				t.Errorf("server span name %q", server.Name)
			}
			if got := server.Resource.Attributes(); len(got) == 0 || got[0].Value.AsString() != "orders" {
				t.Errorf("resource %v, want service.name orders", got)
			}
		})
	}
}

// blockingExporter holds every export until released.
type blockingExporter struct {
	release chan struct{}
	once    sync.Once
	fail    error
}

func (e *blockingExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return e.fail
}

func (e *blockingExporter) Shutdown(context.Context) error {
	e.once.Do(func() { close(e.release) })
	return nil
}

func TestFullQueueDropsNeverBlocks(t *testing.T) {
	t.Parallel()
	exp := &blockingExporter{release: make(chan struct{})}
	tr := NewWithExporter(&Settings{Service: "s", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: 1}, exp,
		Options{QueueSize: 4, BatchSize: 1}, nil)
	// The exporter holds its first batch: the queue takes 4 more, then
	// every further span is dropped without the request waiting.
	const requests = 50
	for range requests {
		traced(tr, httptest.NewRequest("GET", "http://x/", nil))
	}
	st := tr.Stats()
	if st.Dropped < 2*requests-5 {
		t.Fatalf("dropped %d of %d spans, want at least %d", st.Dropped, 2*requests, 2*requests-5)
	}
	_ = exp.Shutdown(context.Background())
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = tr.Stats()
	if st.Exported+st.Dropped != 2*requests {
		t.Fatalf("exported %d + dropped %d, want %d spans accounted for", st.Exported, st.Dropped, 2*requests)
	}
}

func TestFailedExportCountsDropped(t *testing.T) {
	t.Parallel()
	exp := &blockingExporter{release: make(chan struct{}), fail: errors.New("collector down")}
	close(exp.release)
	exp.once.Do(func() {})
	tr := NewWithExporter(&Settings{Service: "s", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: 1}, exp, Options{}, nil)
	traced(tr, httptest.NewRequest("GET", "http://x/", nil))
	if err := tr.provider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := tr.Stats(); st.Dropped != 2 || st.Exported != 0 {
		t.Fatalf("stats %+v, want 2 dropped", st)
	}
}

// keepingExporter keeps the spans it is given, also after Shutdown.
type keepingExporter struct {
	mu    sync.Mutex
	names []string
}

func (e *keepingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		e.names = append(e.names, s.Name())
	}
	return nil
}

func (e *keepingExporter) Shutdown(context.Context) error { return nil }

func (e *keepingExporter) exported() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.names)
}

// TestCloseWaitsForTracedRequests: a Tracer retired while a request it
// traces is being served (its listener's tracing changed) closes once that
// request's server span has ended, and exports it; a trace is not cut in
// two by a configuration change.
func TestCloseWaitsForTracedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exp := &keepingExporter{}
		tr := NewWithExporter(&Settings{Service: "orders", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: 1}, exp, Options{}, nil)
		span, _ := tr.StartServer(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		closed := make(chan error, 1)
		go func() { closed <- tr.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a traced request was in flight", err)
		default:
		}
		span.WriteHeader(http.StatusOK)
		span.End()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if got := exp.exported(); !slices.Equal(got, []string{"GET"}) {
			t.Errorf("exported %q, want the in-flight request's server span", got)
		}
	})
}

// TestCloseGivesUpWithItsContext: Close does not wait beyond its context
// for a request that never ends.
func TestCloseGivesUpWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := NewWithExporter(&Settings{Service: "orders", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: 1}, &keepingExporter{}, Options{}, nil)
		tr.StartServer(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_ = tr.Close(ctx)
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("Close waited %v, want its context's 5s", waited)
		}
	})
}

// TestHoldBeforeCloseIsWaitedFor: a request held (Hold) before its
// Tracer's Close, whose server span starts only after Close began, is
// waited for and exported; once a closing Tracer has nothing in flight,
// Hold fails, so that the caller takes the configuration that replaced it
// rather than start a span that would be lost.
func TestHoldBeforeCloseIsWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		exp := &keepingExporter{}
		tr := NewWithExporter(&Settings{Service: "orders", Cluster: "c", Timeout: DefaultExportTimeout, Ratio: 1}, exp, Options{}, nil)
		if !tr.Hold() {
			t.Fatal("Hold failed on a live Tracer")
		}
		closed := make(chan error, 1)
		go func() { closed <- tr.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a request held the Tracer", err)
		default:
		}
		span, _ := tr.StartServerWith(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil), ServerStart{Path: "/", Held: true})
		span.WriteHeader(http.StatusOK)
		span.End()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		if got := exp.exported(); !slices.Equal(got, []string{"GET"}) {
			t.Errorf("exported %q, want the held request's server span", got)
		}
		if tr.Hold() {
			t.Error("Hold succeeded on a closed Tracer")
		}
	})
}
