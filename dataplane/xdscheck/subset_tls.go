package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// Names of the TLS typed configs and keys of docs/xds.md ("Identity, mTLS and
// authorization on the wire").
const (
	downstreamTLSType    protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSType      protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	tlsInspectorType     protoreflect.FullName = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	secretType           protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.Secret"
	validationType       protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext"
	enumSANTypeURI                             = 3 // SubjectAltNameMatcher.SanType.URI
	localCertificateName                       = "default"
	// transportSocketMatchKey is the endpoint metadata namespace matched by a
	// cluster's transport_socket_matches.
	transportSocketMatchKey = "envoy.transport_socket_match"
)

// Transport sockets: a listener's filter chain carries a DownstreamTlsContext,
// a cluster's transport_socket_matches an UpstreamTlsContext.
var (
	downstreamTransportSocket = Allow("name").
					With("typed_config", Field{AnyTypes: []protoreflect.FullName{downstreamTLSType}}).
					Requires("typed_config")
	upstreamTransportSocket = Allow("name").
				With("typed_config", Field{AnyTypes: []protoreflect.FullName{upstreamTLSType}}).
				Requires("typed_config")
)

// tlsSubset is the TLS part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): transport sockets, TLS contexts, secrets.
func tlsSubset() Rules {
	return Rules{
		// Listener side: tls_inspector and the transport protocol of a chain.
		"envoy.config.listener.v3.ListenerFilter": Allow("name").
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{tlsInspectorType}}).
			Requires("typed_config"),
		tlsInspectorType: Allow(),
		"envoy.config.listener.v3.FilterChainMatch": Allow().
			With("transport_protocol", Field{Values: []string{"tls", "raw_buffer"}}).
			Requires("transport_protocol"),

		// Cluster side: transport_socket_matches.
		"envoy.config.cluster.v3.Cluster.TransportSocketMatch": Allow("name", "match").
			With("transport_socket", Field{Only: upstreamTransportSocket}).
			Requires("transport_socket"),

		// TLS contexts.
		downstreamTLSType: Allow("common_tls_context", "require_client_certificate").
			Requires("common_tls_context"),
		upstreamTLSType: Allow("common_tls_context", "sni").
			Requires("common_tls_context"),
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": Allow(
			"validation_context_sds_secret_config", "combined_validation_context").
			// The proxy's own certificate is the local secret "default", never
			// sent over SDS (the key stays on the node).
			With("tls_certificate_sds_secret_configs", Field{MinItems: 1, MaxItems: 1, Only: Allow().
				With("name", Field{Values: []string{localCertificateName}}).
				Requires("name")}).
			With("alpn_protocols", Field{Values: []string{"h2", "http/1.1"}}).
			Requires("tls_certificate_sds_secret_configs"),
		"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": Allow("name", "sds_config").
			Requires("name", "sds_config"),
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": Allow(
			"default_validation_context", "validation_context_sds_secret_config").
			Requires("default_validation_context", "validation_context_sds_secret_config"),
		// In a combined validation context: the peer's SPIFFE ID.
		validationType: Allow().
			With("match_typed_subject_alt_names", Field{MinItems: 1}).
			Requires("match_typed_subject_alt_names"),
		"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": Allow().
			With("san_type", Field{Enums: []protoreflect.EnumNumber{enumSANTypeURI}}).
			With("matcher", Field{Only: Allow("exact").Requires("exact")}).
			Requires("san_type", "matcher"),

		// Secret (SDS): only the trust bundle, as PEM bytes.
		secretType: Allow("name").
			With("validation_context", Field{Only: Allow().
				With("trusted_ca", Field{Only: Allow("inline_bytes").Requires("inline_bytes")}).
				Requires("trusted_ca")}).
			Requires("name", "validation_context"),
	}
}
