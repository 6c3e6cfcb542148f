package xdsclient

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func sdsRef(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}}
}

func socketOf(t *testing.T, m proto.Message) *corev3.TransportSocket {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// tlsListener references validation secret bundle and the local certificate.
func tlsListener(t *testing.T, bundle string) *listenerv3.Listener {
	return &listenerv3.Listener{Name: "inbound", FilterChains: []*listenerv3.FilterChain{{
		TransportSocket: socketOf(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: LocalSecretName}},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sdsRef(bundle)},
		}}),
	}}}
}

// tlsCluster references bundle through a combined validation context.
func tlsCluster(t *testing.T, bundle string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: "c1", TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "mtls",
		TransportSocket: socketOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: LocalSecretName}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: sdsRef(bundle),
			}},
		}}),
	}}}
}

func TestSecretNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		resources []proto.Message
		want      []string
	}{
		{"none", nil, nil},
		{"plaintext listener", []proto.Message{&listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{}}}}, nil},
		{"listener", []proto.Message{tlsListener(t, "ROOTCA")}, []string{"ROOTCA"}},
		{"cluster", []proto.Message{tlsCluster(t, "ROOTCA")}, []string{"ROOTCA"}},
		{"distinct and sorted", []proto.Message{tlsCluster(t, "ROOTCA"), tlsListener(t, "B"), tlsListener(t, "ROOTCA")}, []string{"B", "ROOTCA"}},
		{"local secret never requested", []proto.Message{tlsListener(t, LocalSecretName)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := SecretNames(tt.resources); !slices.Equal(got, tt.want) {
				t.Fatalf("SecretNames() = %v, want %v", got, tt.want)
			}
		})
	}
}

func tlsSnapshot(t *testing.T, version string) *cachev3.Snapshot {
	t.Helper()
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  {tlsCluster(t, "ROOTCA")},
		resourcev3.ListenerType: {tlsListener(t, "ROOTCA")},
		resourcev3.SecretType: {&tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("pem " + version)}},
		}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestClientSubscribesToReferencedSecrets(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, "127.0.0.1:0", nil)
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, tlsSnapshot(t, "v1")); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	runClient(t, []string{cp.addr}, rec.apply)

	rec.waitVersion(t, SecretType, "v1")
	cp.waitRequest(t, "ACK of SDS v1", isACK(SecretType, "v1"))
	sds := cp.waitRequest(t, "SDS subscription", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == SecretType })
	if got := sds.GetResourceNames(); !slices.Equal(got, []string{"ROOTCA"}) {
		t.Errorf("SDS subscription names = %v, want [ROOTCA]", got)
	}
	rec.mu.Lock()
	if got := rec.names[SecretType]; !slices.Equal(got, []string{"ROOTCA"}) {
		t.Errorf("applied secrets = %v, want [ROOTCA]", got)
	}
	rec.reject[SecretType] = errors.New(`secret "ROOTCA": bad bundle`)
	rec.mu.Unlock()

	// A rejected secret is NACKed with the last good version.
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, tlsSnapshot(t, "v2")); err != nil {
		t.Fatal(err)
	}
	nack := cp.waitRequest(t, "NACK of SDS v2", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == SecretType && r.GetErrorDetail() != nil
	})
	if nack.GetVersionInfo() != "v1" || !strings.Contains(nack.GetErrorDetail().GetMessage(), "bad bundle") {
		t.Errorf("NACK = version %q detail %q, want v1 and the Apply error", nack.GetVersionInfo(), nack.GetErrorDetail().GetMessage())
	}
}
