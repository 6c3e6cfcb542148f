package xdscheck

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestTracingSubset: HttpConnectionManager.tracing with the OpenTelemetry
// provider and one OTLP service is accepted; other providers, both or no
// services, and unimplemented fields are not.
func TestTracingSubset(t *testing.T) {
	t.Parallel()
	grpc := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "c"}}}
	http := &corev3.HttpService{HttpUri: &corev3.HttpUri{Uri: "http://c/v1/traces",
		HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "c"}, Timeout: durationpb.New(1e9)}}
	tests := []struct {
		name     string
		provider proto.Message
		mutate   func(*hcmv3.HttpConnectionManager_Tracing)
		want     string // "" accepted
	}{
		{name: "grpc", provider: &tracev3.OpenTelemetryConfig{GrpcService: grpc, ServiceName: "s"}},
		{name: "http", provider: &tracev3.OpenTelemetryConfig{HttpService: http}},
		{name: "sampling and literal tags", provider: &tracev3.OpenTelemetryConfig{GrpcService: grpc},
			mutate: func(tr *hcmv3.HttpConnectionManager_Tracing) {
				tr.ClientSampling, tr.RandomSampling, tr.OverallSampling = &typev3.Percent{Value: 100}, &typev3.Percent{Value: 1}, &typev3.Percent{Value: 50}
				tr.CustomTags = []*tracingtypev3.CustomTag{{Tag: "k", Type: &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: "v"}}}}
			}},
		{name: "both services", provider: &tracev3.OpenTelemetryConfig{GrpcService: grpc, HttpService: http},
			want: "exactly one of grpc_service and http_service"},
		{name: "no service", provider: &tracev3.OpenTelemetryConfig{ServiceName: "s"},
			want: "exactly one of grpc_service and http_service"},
		{name: "another provider", provider: &tracev3.ZipkinConfig{CollectorCluster: "c", CollectorEndpoint: "/api/v2/spans"},
			want: "tracing.provider.typed_config"},
		{name: "request header tag", provider: &tracev3.OpenTelemetryConfig{GrpcService: grpc},
			mutate: func(tr *hcmv3.HttpConnectionManager_Tracing) {
				tr.CustomTags = []*tracingtypev3.CustomTag{{Tag: "k", Type: &tracingtypev3.CustomTag_RequestHeader{
					RequestHeader: &tracingtypev3.CustomTag_Header{Name: "x"}}}}
			},
			want: "tracing.custom_tags[0].request_header: not supported"},
		{name: "verbose", provider: &tracev3.OpenTelemetryConfig{GrpcService: grpc},
			mutate: func(tr *hcmv3.HttpConnectionManager_Tracing) { tr.Verbose = true },
			want:   "tracing.verbose: not supported"},
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := anypb.New(tc.provider)
			if err != nil {
				t.Fatal(err)
			}
			tr := &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{
				Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg}}}
			if tc.mutate != nil {
				tc.mutate(tr)
			}
			hcm := &hcmv3.HttpConnectionManager{
				StatPrefix:     "x",
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "x", ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
				HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
				Tracing:        tr,
			}
			err = Check(hcm)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
