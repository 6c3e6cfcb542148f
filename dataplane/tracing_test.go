package dataplane

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// withTracing makes the listener trace every request to an OTLP/HTTP
// collector at collector, through a STATIC cluster; provider overrides the
// provider's typed config when not nil.
func withTracing(t *testing.T, collector string, provider proto.Message) func(*snapshot) {
	return func(s *snapshot) {
		if provider == nil {
			provider = &tracev3.OpenTelemetryConfig{ServiceName: "edge", HttpService: &corev3.HttpService{HttpUri: &corev3.HttpUri{
				Uri: "http://" + collector + "/v1/traces", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "collector"}, Timeout: durationpb.New(5 * time.Second),
			}}}
		}
		cfg, err := anypb.New(provider)
		if err != nil {
			t.Fatal(err)
		}
		s.hcm.Tracing = &hcmv3.HttpConnectionManager_Tracing{
			RandomSampling: &typev3.Percent{Value: 100},
			Provider:       &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg}},
		}
		s.clusters = append(s.clusters, &clusterv3.Cluster{
			Name:                 "collector",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "collector", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
					Endpoint: &endpointv3.Endpoint{Address: socketAddress(t, collector)}}}},
			}}},
		})
	}
}

type tracingCounters struct {
	Tracers  int    `json:"tracers"`
	Exported uint64 `json:"spans_exported"`
}

func statsTracing(t *testing.T, p *Proxy) tracingCounters {
	t.Helper()
	_, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+"/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct{ Tracing tracingCounters }
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	return stats.Tracing
}

// TestProxyTracesAsConfiguredOverXDS: a listener whose connection manager
// has tracing exports its spans over OTLP/HTTP to the collector cluster's
// endpoint; without tracing the tracer is retired, its counters kept; an
// unsupported provider config is NACKed by field.
func TestProxyTracesAsConfiguredOverXDS(t *testing.T) {
	t.Parallel()
	var posts atomic.Int64
	var host atomic.Pointer[string] // the collector's address: the Host of http_uri.uri
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want := host.Load(); r.URL.Path == "/v1/traces" && r.Header.Get("Content-Type") == "application/x-protobuf" &&
			want != nil && r.Host == *want {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	collectorAddr := collector.Listener.Addr().String()
	host.Store(&collectorAddr)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withTracing(t, collectorAddr, nil)}.build(t))
	t.Cleanup(func() {
		if t.Failed() {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			for _, n := range cp.nacks {
				t.Logf("NACK %s: %s", n.GetTypeUrl(), n.GetErrorDetail().GetMessage())
			}
		}
	})
	url := waitServing(t, p, http.DefaultClient, "a")
	eventually(t, "spans exported to the collector", func() bool {
		_, _, _ = get(http.DefaultClient, url)
		st := statsTracing(t, p)
		return posts.Load() > 0 && st.Tracers == 1 && st.Exported >= 2
	})

	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	var exported uint64
	eventually(t, "tracer retired", func() bool {
		st := statsTracing(t, p)
		exported = st.Exported
		return st.Tracers == 0 && st.Exported >= 2
	})
	before := posts.Load()
	for range 3 {
		if code, _, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK {
			t.Fatalf("untraced request: %d %v", code, err)
		}
	}
	if st := statsTracing(t, p); st.Exported != exported || posts.Load() != before {
		t.Fatalf("spans exported without tracing: %+v, %d posts (were %d)", st, posts.Load(), before)
	}

	cp.set(t, config{version: "v3", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withTracing(t, collectorAddr, &tracev3.OpenTelemetryConfig{ServiceName: "edge",
			GrpcService:  &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector"}}},
			MaxCacheSize: wrapperspb.UInt32(10)})}.build(t))
	eventually(t, "NACK of the listener", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return slices.ContainsFunc(cp.nacks, func(n *discoveryv3.DiscoveryRequest) bool {
			return n.GetTypeUrl() == resourcev3.ListenerType &&
				strings.Contains(n.GetErrorDetail().GetMessage(), "max_cache_size: not supported")
		})
	})
}
