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
	downstreamTransportSocket = allow("name").
					with("typed_config", field{anyTypes: []protoreflect.FullName{downstreamTLSType}}).
					requires("typed_config")
	upstreamTransportSocket = allow("name").
				with("typed_config", field{anyTypes: []protoreflect.FullName{upstreamTLSType}}).
				requires("typed_config")
)

// tlsSubset is the TLS part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): transport sockets, TLS contexts, secrets.
var tlsSubset = map[protoreflect.FullName]*message{
	// Listener side: tls_inspector and the transport protocol of a chain.
	"envoy.config.listener.v3.ListenerFilter": allow("name").
		with("typed_config", field{anyTypes: []protoreflect.FullName{tlsInspectorType}}).
		requires("typed_config"),
	tlsInspectorType: allow(),
	"envoy.config.listener.v3.FilterChainMatch": allow().
		with("transport_protocol", field{values: []string{"tls", "raw_buffer"}}).
		requires("transport_protocol"),

	// Cluster side: transport_socket_matches.
	"envoy.config.cluster.v3.Cluster.TransportSocketMatch": allow("name", "match").
		with("transport_socket", field{only: upstreamTransportSocket}).
		requires("transport_socket"),

	// TLS contexts.
	downstreamTLSType: allow("common_tls_context", "require_client_certificate").
		requires("common_tls_context"),
	upstreamTLSType: allow("common_tls_context", "sni").
		requires("common_tls_context"),
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": allow(
		"validation_context_sds_secret_config", "combined_validation_context").
		// The proxy's own certificate is the local secret "default", never
		// sent over SDS (the key stays on the node).
		with("tls_certificate_sds_secret_configs", field{minItems: 1, maxItems: 1, only: allow().
			with("name", field{values: []string{localCertificateName}}).
			requires("name")}).
		with("alpn_protocols", field{values: []string{"h2", "http/1.1"}}).
		requires("tls_certificate_sds_secret_configs"),
	"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": allow("name", "sds_config").
		requires("name", "sds_config"),
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": allow(
		"default_validation_context", "validation_context_sds_secret_config").
		requires("default_validation_context", "validation_context_sds_secret_config"),
	// In a combined validation context: the peer's SPIFFE ID.
	validationType: allow().
		with("match_typed_subject_alt_names", field{minItems: 1}).
		requires("match_typed_subject_alt_names"),
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": allow().
		with("san_type", field{enums: []protoreflect.EnumNumber{enumSANTypeURI}}).
		with("matcher", field{only: allow("exact").requires("exact")}).
		requires("san_type", "matcher"),

	// Secret (SDS): only the trust bundle, as PEM bytes.
	secretType: allow("name").
		with("validation_context", field{only: allow().
			with("trusted_ca", field{only: allow("inline_bytes").requires("inline_bytes")}).
			requires("trusted_ca")}).
		requires("name", "validation_context"),
}
