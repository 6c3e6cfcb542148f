package main

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/controlplane/translate"
)

// TestConfigDumpView: the resources the control plane serves, as its
// /config_dump renders them, read back into their effective policy per
// cluster and route; a secret's key material is printed in no format.
func TestConfigDumpView(t *testing.T) {
	t.Parallel()
	anyOf := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	const keyMaterial = "-----BEGIN PRIVATE KEY-----secret"
	res := &translate.Resources{
		Clusters: []*clusterv3.Cluster{{
			Name: "default/orders:80",
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{servicemeta.Key: servicemeta.Service{
				VIP: netip.MustParseAddr("240.240.1.2"), Hostnames: []string{"orders"}}.Struct()}},
			LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
			LbConfig: &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(2), SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(30e9)}}},
			ConnectTimeout: durationpb.New(2e9),
			CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(100), MaxRetries: wrapperspb.UInt32(5),
				RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(3)}}}},
			OutlierDetection: &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(5), EnforcingSuccessRate: wrapperspb.UInt32(0),
				Interval: durationpb.New(1e9), BaseEjectionTime: durationpb.New(30e9)},
			HealthChecks: []*corev3.HealthCheck{{Interval: durationpb.New(5e9), Timeout: durationpb.New(1e9),
				HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz"}}}},
		}},
		Endpoints: []*endpointv3.ClusterLoadAssignment{{ClusterName: "default/orders:80", Endpoints: []*endpointv3.LocalityLbEndpoints{
			{Locality: &corev3.Locality{Zone: "a"}, LbEndpoints: []*endpointv3.LbEndpoint{{}, {}}},
			{Locality: &corev3.Locality{Zone: "b"}, Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{{}}},
		}}},
		Routes: []*routev3.RouteConfiguration{{Name: "default/edge/8080", VirtualHosts: []*routev3.VirtualHost{{
			Name: "default/edge/8080/*", Domains: []string{"*"}, IncludeAttemptCountInResponse: true,
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/orders"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "default/orders:80"},
					Timeout:          durationpb.New(10e9),
					RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,reset", NumRetries: wrapperspb.UInt32(2), PerTryTimeout: durationpb.New(2e9),
						RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(25e6), MaxInterval: durationpb.New(250e6)}},
					HashPolicy: []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
						Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}},
				}},
				TypedPerFilterConfig: map[string]*anypb.Any{
					"envoy.filters.http.fault": anyOf(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
						ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: 503},
						Percentage: &typev3.FractionalPercent{Numerator: 10_000, Denominator: typev3.FractionalPercent_MILLION}},
						Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(1e8)}}}),
					"envoy.filters.http.buffer": anyOf(&bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{
						Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1024)}}}),
				},
			}},
		}}}},
		Secrets: []*tlsv3.Secret{{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: keyMaterial}}}}}},
	}
	body, err := json.Marshal(map[string]any{"node": "gateway~edge~1", "version": "v1", "resources": res})
	if err != nil {
		t.Fatal(err)
	}
	var raw rawConfigDump
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	view, err := newConfigDumpView(&raw)
	if err != nil {
		t.Fatalf("newConfigDumpView: %v", err)
	}
	var table strings.Builder
	if err := printConfigDump(&table, view); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(table.String()), " ")
	for _, want := range []string{
		"default/orders:80 240.240.1.2 LEAST_REQUEST choices=2 slowStart=30s 2s - 3 a=2 b@p1=1",
		"maxConnections=100 maxRetries=5 retryBudget=20%/3",
		"consecutive5xx=5 interval=1s baseEjection=30s",
		"http /healthz interval=5s timeout=1s",
		"prefix /orders default/orders:80 10s on=5xx,reset retries=2 perTry=2s backoff=25ms-250ms header x-user - delay 100ms 100%, abort 503 1% 1024 bytes - counted",
		"default certificate and private key (redacted)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	for _, output := range []string{"json", "yaml"} {
		var b strings.Builder
		if err := writeStructured(&b, output, view); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "retries=2") {
			t.Errorf("-o %s lacks the retry:\n%s", output, b.String())
		}
		if strings.Contains(b.String(), "PRIVATE KEY") {
			t.Errorf("-o %s prints key material", output)
		}
	}
	if strings.Contains(table.String(), "PRIVATE KEY") {
		t.Error("the table prints key material")
	}
}
