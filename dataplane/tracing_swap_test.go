package dataplane

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// otlpSpans counts the spans an OTLP receiver accepted.
type otlpSpans struct{ n atomic.Int64 }

func (c *otlpSpans) add(req *coltracepb.ExportTraceServiceRequest) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			c.n.Add(int64(len(ss.GetSpans())))
		}
	}
}

// otlpHTTPReceiver is an OTLP/HTTP (protobuf) collector on a free loopback
// port.
func otlpHTTPReceiver(t *testing.T, spans *otlpSpans) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		req := &coltracepb.ExportTraceServiceRequest{}
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		spans.add(req)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// grpcTraceService is the OTLP/gRPC trace service of otlpGRPCReceiver.
type grpcTraceService struct {
	coltracepb.UnimplementedTraceServiceServer
	spans *otlpSpans
}

func (s *grpcTraceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.spans.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// otlpGRPCReceiver is an OTLP/gRPC collector on a free loopback port.
func otlpGRPCReceiver(t *testing.T, spans *otlpSpans) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, &grpcTraceService{spans: spans})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// withGRPCTracing makes the listener trace every request to the OTLP/gRPC
// collector at collector: the cluster "collector" (the same name as
// withTracing's, as the control plane's meshgate_tracing_collector is for
// both protocols) speaks HTTP/2.
func withGRPCTracing(t *testing.T, collector string) func(*snapshot) {
	base := withTracing(t, collector, &tracev3.OpenTelemetryConfig{ServiceName: "edge",
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector"}},
			Timeout:         durationpb.New(5 * time.Second),
		}})
	return func(s *snapshot) {
		base(s)
		opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})
		if err != nil {
			t.Fatal(err)
		}
		c := s.clusters[len(s.clusters)-1]
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	}
}

// TestTracingSwapLosesNoSpan: when the mesh's tracing moves from OTLP/HTTP
// to OTLP/gRPC (the collector cluster, same name, now at the gRPC port),
// the requests in flight during the change, traced by the old exporter,
// and the requests after it, traced by the new one, all have their spans
// at one of the two collectors: none is sent to the other protocol's port
// and dropped.
func TestTracingSwapLosesNoSpan(t *testing.T) {
	t.Parallel()
	var httpSpans, grpcSpans otlpSpans
	httpCollector := otlpHTTPReceiver(t, &httpSpans)
	grpcCollector := otlpGRPCReceiver(t, &grpcSpans)

	// The backend holds the requests marked "hold" until released.
	var served atomic.Int64
	entered := make(chan struct{}, 16)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			entered <- struct{}{}
			<-release
		}
		served.Add(1)
		_, _ = io.WriteString(w, "a")
	}))
	t.Cleanup(srv.Close)
	backendA := srv.Listener.Addr().String()

	cp := startControlPlane(t)
	p := startProxy(t, cp)
	// Untraced first: the in-flight requests are the first traced ones, so
	// the OTLP/HTTP exporter has no connection to reuse when it exports
	// them (as after a collector's idle timeout).
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")
	untraced := served.Load()
	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withTracing(t, httpCollector, nil)}.build(t))
	eventually(t, "the OTLP/HTTP tracer", func() bool { return statsTracing(t, p).Tracers == 1 })

	const inFlight = 4
	results := make(chan error, inFlight)
	for range inFlight {
		go func() {
			code, _, err := get(http.DefaultClient, url+"?hold")
			if err == nil && code != http.StatusOK {
				err = &statusError{code}
			}
			results <- err
		}()
	}
	for range inFlight {
		<-entered // each request is past its server and client spans' start
	}

	cp.set(t, config{version: "v3", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withGRPCTracing(t, grpcCollector)}.build(t))
	// The OTLP/gRPC tracer is live while the OTLP/HTTP one waits for the
	// requests it traces.
	eventually(t, "the OTLP/gRPC tracer beside the retiring one", func() bool { return statsTracing(t, p).Tracers == 2 })
	releaseAll()
	for range inFlight {
		if err := <-results; err != nil {
			t.Fatalf("in-flight request: %v", err)
		}
	}
	const after = 4
	for range after {
		if code, _, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK {
			t.Fatalf("request after the change: %d %v", code, err)
		}
	}
	traced := served.Load() - untraced
	if traced != inFlight+after {
		t.Fatalf("%d traced requests served, want %d", traced, inFlight+after)
	}
	// Every span is accounted for (exported or dropped) once the old tracer
	// is closed and the new one has exported: then none may be dropped.
	var st swapCounters
	eventually(t, "every span exported or dropped", func() bool {
		st = swapStats(t, p)
		return st.Tracers == 1 && st.Exported+st.Dropped >= uint64(2*traced)
	})
	if st.Dropped != 0 {
		t.Errorf("%d spans dropped across the tracing change (%d exported)", st.Dropped, st.Exported)
	}
	if got := httpSpans.n.Load() + grpcSpans.n.Load(); got != 2*traced {
		t.Errorf("collectors received %d spans (OTLP/HTTP %d, OTLP/gRPC %d), want %d: 2 per request",
			got, httpSpans.n.Load(), grpcSpans.n.Load(), 2*traced)
	}
	if httpSpans.n.Load() != 2*inFlight {
		t.Errorf("OTLP/HTTP collector received %d spans, want the %d of the requests in flight during the change", httpSpans.n.Load(), 2*inFlight)
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

type swapCounters struct {
	Tracers  int    `json:"tracers"`
	Exported uint64 `json:"spans_exported"`
	Dropped  uint64 `json:"spans_dropped"`
}

func swapStats(t *testing.T, p *Proxy) swapCounters {
	t.Helper()
	_, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+"/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct{ Tracing swapCounters }
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	return stats.Tracing
}
