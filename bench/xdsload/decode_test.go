package main

import (
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadClusterAsTheProxyDoes(t *testing.T) {
	t.Parallel()
	sds := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}
	}
	tlsContext, err := anypb.New(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("spiffe-other")},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds("ROOTCA")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	socket := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsContext}}
	eds := &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	tests := []struct {
		name        string
		cluster     *clusterv3.Cluster
		wantEDS     string
		wantSecrets []string
	}{
		{"EDS with its service name and mTLS", &clusterv3.Cluster{Name: "default/a:80", ClusterDiscoveryType: eds,
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "cla-a"}, ConnectTimeout: durationpb.New(5e9), TransportSocket: socket},
			"cla-a", []string{"ROOTCA", "spiffe-other"}},
		{"EDS without a service name", &clusterv3.Cluster{Name: "default/b:80", ClusterDiscoveryType: eds}, "default/b:80", nil},
		{"static, socket in a match", &clusterv3.Cluster{Name: "inbound", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{Name: "m", TransportSocket: socket}}}, "", []string{"ROOTCA", "spiffe-other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := marshal(t, tt.cluster)
			got, err := readCluster(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.name != tt.cluster.GetName() || got.eds != tt.wantEDS {
				t.Fatalf("got name %q eds %q, want %q %q", got.name, got.eds, tt.cluster.GetName(), tt.wantEDS)
			}
			memo := map[string][]string{}
			var secrets []string
			for _, s := range got.sockets {
				names, err := socketSecrets(memo, s)
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, names...)
			}
			if !slices.Equal(secrets, tt.wantSecrets) {
				t.Fatalf("secrets %v, want %v", secrets, tt.wantSecrets)
			}
			if _, err := readCluster(b[:len(b)-1]); err == nil {
				t.Fatal("a truncated cluster read without error")
			}
		})
	}
}

func TestReadRouteConfigFindsEveryCluster(t *testing.T) {
	t.Parallel()
	route := func(a *routev3.RouteAction) *routev3.Route {
		return &routev3.Route{Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: a}}
	}
	rc := &routev3.RouteConfiguration{Name: "outbound", VirtualHosts: []*routev3.VirtualHost{
		{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{
			route(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "default/a:80"}, Timeout: durationpb.New(1e9)}),
			{Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}}},
		}},
		{Name: "b", Domains: []string{"b"}, Routes: []*routev3.Route{
			route(&routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "default/b:80", Weight: wrapperspb.UInt32(1)}, {Name: "default/c:80", Weight: wrapperspb.UInt32(2)}}}}}),
		}},
	}}
	b := marshal(t, rc)
	refs := map[string]bool{}
	name, err := readRouteConfig(b, refs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"default/a:80", "default/b:80", "default/c:80"}
	if got := slices.Sorted(maps.Keys(refs)); name != "outbound" || !slices.Equal(got, want) {
		t.Fatalf("got %q %v, want outbound %v", name, got, want)
	}
	if _, err := readRouteConfig(b[:len(b)-1], map[string]bool{}); err == nil {
		t.Fatal("a truncated route configuration read without error")
	}
}
