package translate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// Names on the wire for identity and mTLS (docs/xds.md).
const (
	// RootCASecretName is the SDS secret holding the trust bundle.
	RootCASecretName = "ROOTCA"
	// IdentitySecretName is the proxy's own certificate and key, resolved
	// locally by the proxy and never sent by the control plane.
	IdentitySecretName = "default"

	tlsTransportSocketName  = "envoy.transport_sockets.tls"
	tlsInspectorName        = "envoy.filters.listener.tls_inspector"
	transportSocketMatchKey = "envoy.transport_socket_match"
	mtlsMatchName           = "mtls"
	tlsModeKey              = "tlsMode"
	tlsModeMTLS             = "mtls"
	transportProtocolTLS    = "tls"
	transportProtocolRaw    = "raw_buffer"
)

// rootCASecret is the ROOTCA secret: the trust bundle as a validation context.
func rootCASecret(bundle []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: RootCASecretName,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bundle}},
		}},
	}
}

func rootCASdsConfig() *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: RootCASecretName, SdsConfig: adsConfigSource()}
}

func identitySdsConfig() []*tlsv3.SdsSecretConfig {
	return []*tlsv3.SdsSecretConfig{{Name: IdentitySecretName}}
}

func transportSocket(ctx proto.Message) (*corev3.TransportSocket, error) {
	typed, err := anypb.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tls context: %w", err)
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed},
	}, nil
}

// downstreamTLS is the transport socket of a sidecar's inbound listener:
// mTLS with a mesh certificate required.
func downstreamTLS() (*corev3.TransportSocket, error) {
	return transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: identitySdsConfig(),
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: rootCASdsConfig(),
			},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
	})
}

// upstreamTLS is the transport socket to a sidecar of the service whose
// SPIFFE ID is peerID.
func upstreamTLS(peerID, protocol string) (*corev3.TransportSocket, error) {
	alpn := "http/1.1"
	if protocol == model.ProtocolHTTP2 {
		alpn = "h2"
	}
	return transportSocket(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: identitySdsConfig(),
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: peerID}},
						}},
					},
					ValidationContextSdsSecretConfig: rootCASdsConfig(),
				},
			},
			AlpnProtocols: []string{alpn},
		},
	})
}

// setMTLSMatch makes a cluster use mTLS to endpoints marked as sidecars.
func setMTLSMatch(c *clusterv3.Cluster, peerID, protocol string) error {
	ts, err := upstreamTLS(peerID, protocol)
	if err != nil {
		return fmt.Errorf("cluster %q: %w", c.Name, err)
	}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name:            mtlsMatchName,
		Match:           &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeMTLS)}},
		TransportSocket: ts,
	}}
	return nil
}

// sidecarEndpointMetadata marks an endpoint as a sidecar for the mtls
// transport socket match.
func sidecarEndpointMetadata() *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModeMTLS)}}
}

// secureInbound turns the plaintext inbound listener l into an mTLS one
// (STRICT: one TLS filter chain; PERMISSIVE: a TLS and a plaintext chain
// chosen by the TLS inspector).
func secureInbound(l *listenerv3.Listener, mode string) error {
	ts, err := downstreamTLS()
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	chain := l.FilterChains[0]
	if mode != policy.MTLSPermissive {
		chain.TransportSocket = ts
		return nil
	}
	inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return fmt.Errorf("listener %q: tls inspector: %w", l.Name, err)
	}
	l.ListenerFilters = []*listenerv3.ListenerFilter{{
		Name:       tlsInspectorName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
	}}
	tlsChain := &listenerv3.FilterChain{
		FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: transportProtocolTLS},
		Filters:          chain.Filters,
		TransportSocket:  ts,
	}
	plainChain := &listenerv3.FilterChain{
		FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: transportProtocolRaw},
		Filters:          chain.Filters,
	}
	l.FilterChains = []*listenerv3.FilterChain{tlsChain, plainChain}
	return nil
}

// setBackendTLS gives the cluster the transport socket of its
// BackendTLSPolicy: TLS to the endpoints that no transport_socket_matches
// entry selects (a sidecar keeps mesh mTLS), with the policy's hostname
// as SNI and the certificate verified against its CA bundle (or the
// system's) and its subjectAltNames, else its hostname. A fail-closed
// policy (no valid CA) has no transport socket: its cluster gets no
// endpoints.
func setBackendTLS(c *clusterv3.Cluster, bt *model.BackendTLS, protocol string) error {
	if bt.FailClosed() {
		return nil
	}
	validation := &tlsv3.CertificateValidationContext{}
	if bt.SystemCA {
		validation.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
	} else {
		validation.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bt.CAPEM}}
	}
	sans := bt.SubjectAltNames
	if len(sans) == 0 {
		sans = []model.SubjectAltName{{Type: "Hostname", Value: bt.Hostname}}
	}
	for _, san := range sans {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if san.Type == "URI" {
			typ = tlsv3.SubjectAltNameMatcher_URI
		}
		validation.MatchTypedSubjectAltNames = append(validation.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: typ,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san.Value}},
		})
	}
	alpn := "http/1.1"
	if protocol == model.ProtocolHTTP2 {
		alpn = "h2"
	}
	ts, err := transportSocket(&tlsv3.UpstreamTlsContext{
		Sni: bt.Hostname,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: validation},
			AlpnProtocols:         []string{alpn},
		},
	})
	if err != nil {
		return fmt.Errorf("cluster %q: backend TLS (%s): %w", c.Name, bt.Policy, err)
	}
	c.TransportSocket = ts
	return nil
}
