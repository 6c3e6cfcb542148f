package xdscheck

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func rootCARef() *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads()}
}

func downstreamTLS() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: rootCARef(),
			},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
	}
}

func upstreamTLS() *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		Sni: "orders.default",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://meshgate.local/ns/default/svc/orders"}},
						}},
					},
					ValidationContextSdsSecretConfig: rootCARef(),
				},
			},
			AlpnProtocols: []string{"http/1.1"},
		},
	}
}

func transportSocket(t *testing.T, m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, m)},
	}
}

// strictListener is a STRICT inbound listener: one chain with TLS.
func strictListener(t *testing.T) *listenerv3.Listener {
	l := listenerWith(t, fullHCM(t, false))
	l.FilterChains[0].TransportSocket = transportSocket(t, downstreamTLS())
	return l
}

// permissiveListener is a PERMISSIVE inbound listener: tls_inspector and a
// TLS and a plaintext chain.
func permissiveListener(t *testing.T) *listenerv3.Listener {
	l := listenerWith(t, fullHCM(t, false))
	plain := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
	plain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	tlsChain := l.FilterChains[0]
	tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	tlsChain.TransportSocket = transportSocket(t, downstreamTLS())
	l.FilterChains = append(l.FilterChains, plain)
	l.ListenerFilters = []*listenerv3.ListenerFilter{{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})},
	}}
	return l
}

func mtlsCluster(t *testing.T) *clusterv3.Cluster {
	c := fullCluster(t, true)
	match, err := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	if err != nil {
		t.Fatal(err)
	}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "mtls", Match: match, TransportSocket: transportSocket(t, upstreamTLS()),
	}}
	return c
}

func rootCASecret() *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: "ROOTCA",
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("-----BEGIN CERTIFICATE-----\n")}},
		}},
	}
}

func TestCheckAcceptsTLSSubset(t *testing.T) {
	t.Parallel()
	withMTLSMetadata := fullCLA()
	tlsMode, _ := structpb.NewStruct(map[string]any{"tlsMode": "mtls"})
	withMTLSMetadata.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["envoy.transport_socket_match"] = tlsMode
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"strict listener", strictListener(t)},
		{"permissive listener", permissiveListener(t)},
		{"cluster with transport socket matches", mtlsCluster(t)},
		{"endpoint with transport socket match metadata", withMTLSMetadata},
		{"root CA secret", rootCASecret()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := Check(tt.msg); err != nil {
				t.Fatalf("Check() = %v, want nil", err)
			}
		})
	}
}

func TestCheckRejectsOutsideTLSSubset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     func(t *testing.T) proto.Message
		wantErr string
	}{
		{
			name: "filter chain match on destination port",
			msg: func(t *testing.T) proto.Message {
				l := permissiveListener(t)
				l.FilterChains[0].FilterChainMatch.DestinationPort = wrapperspb.UInt32(8443)
				return l
			},
			wantErr: `listener "edge": filter_chains[0].filter_chain_match: prefix_ranges and destination_port need the original_dst listener filter`,
		},
		{
			name: "unknown transport protocol",
			msg: func(t *testing.T) proto.Message {
				l := permissiveListener(t)
				l.FilterChains[1].FilterChainMatch.TransportProtocol = "quic"
				return l
			},
			wantErr: `listener "edge": filter_chains[1].filter_chain_match.transport_protocol: value "quic" not supported`,
		},
		{
			name: "listener filter other than tls_inspector",
			msg: func(t *testing.T) proto.Message {
				l := permissiveListener(t)
				l.ListenerFilters[0].ConfigType = &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}
				return l
			},
			wantErr: `listener "edge": listener_filters[0].typed_config: typed config "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" not supported`,
		},
		{
			name: "upstream context on a listener",
			msg: func(t *testing.T) proto.Message {
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, upstreamTLS())
				return l
			},
			wantErr: `filter_chains[0].transport_socket.typed_config: typed config "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" not supported`,
		},
		{
			name: "downstream context in a cluster",
			msg: func(t *testing.T) proto.Message {
				c := mtlsCluster(t)
				c.TransportSocketMatches[0].TransportSocket = transportSocket(t, downstreamTLS())
				return c
			},
			wantErr: `transport_socket_matches[0].transport_socket.typed_config: typed config "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext" not supported`,
		},
		{
			name: "default transport socket on a cluster",
			msg: func(t *testing.T) proto.Message {
				c := mtlsCluster(t)
				c.TransportSocket = transportSocket(t, upstreamTLS())
				return c
			},
			wantErr: `cluster "default/orders:80": transport_socket.typed_config.common_tls_context: a cluster's transport_socket is TLS to a backend: validation_context required`,
		},
		{
			name: "inline certificate",
			msg: func(t *testing.T) proto.Message {
				ctx := downstreamTLS()
				ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{}}
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, ctx)
				return l
			},
			wantErr: `common_tls_context.tls_certificates: not supported`,
		},
		{
			name: "certificate from SDS",
			msg: func(t *testing.T) proto.Message {
				ctx := downstreamTLS()
				ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0] = &tlsv3.SdsSecretConfig{Name: "default", SdsConfig: ads()}
				// The local secret is never received over SDS.
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, ctx)
				return l
			},
			wantErr: `common_tls_context.tls_certificate_sds_secret_configs: want the local secret "default" without sds_config`,
		},
		{
			name: "certificate other than the local one, not from SDS",
			msg: func(t *testing.T) proto.Message {
				ctx := downstreamTLS()
				ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].Name = "other"
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, ctx)
				return l
			},
			wantErr: `common_tls_context.tls_certificate_sds_secret_configs: want the local secret "default" without sds_config`,
		},
		{
			name: "tls params",
			msg: func(t *testing.T) proto.Message {
				ctx := downstreamTLS()
				ctx.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_1}
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, ctx)
				return l
			},
			wantErr: `common_tls_context.tls_params.tls_minimum_protocol_version: value TLSv1_1 not supported`,
		},
		{
			name: "unknown alpn protocol",
			msg: func(t *testing.T) proto.Message {
				ctx := downstreamTLS()
				ctx.CommonTlsContext.AlpnProtocols = []string{"h3"}
				l := strictListener(t)
				l.FilterChains[0].TransportSocket = transportSocket(t, ctx)
				return l
			},
			wantErr: `common_tls_context.alpn_protocols[0]: value "h3" not supported`,
		},
		{
			name: "dns subject alt name",
			msg: func(t *testing.T) proto.Message {
				ctx := upstreamTLS()
				ctx.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].SanType = tlsv3.SubjectAltNameMatcher_DNS
				c := mtlsCluster(t)
				c.TransportSocketMatches[0].TransportSocket = transportSocket(t, ctx)
				return c
			},
			wantErr: `match_typed_subject_alt_names[0].san_type: want URI (a SPIFFE ID) in the mesh`,
		},
		{
			name: "prefix subject alt name",
			msg: func(t *testing.T) proto.Message {
				ctx := upstreamTLS()
				ctx.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames[0].Matcher = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}}
				c := mtlsCluster(t)
				c.TransportSocketMatches[0].TransportSocket = transportSocket(t, ctx)
				return c
			},
			wantErr: `match_typed_subject_alt_names[0].matcher.prefix: not supported`,
		},
		{
			name: "secret with a certificate from a file",
			msg: func(t *testing.T) proto.Message {
				return &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/cert.pem"}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("k")}},
				}}}
			},
			wantErr: `secret "default": tls_certificate.certificate_chain.filename: not supported`,
		},
		{
			name: "secret trust bundle from a file",
			msg: func(t *testing.T) proto.Message {
				s := rootCASecret()
				s.GetValidationContext().TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ca.pem"}}
				return s
			},
			wantErr: `secret "ROOTCA": validation_context.trusted_ca.filename: not supported`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Check(tt.msg(t))
			if err == nil {
				t.Fatalf("Check() = nil, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
