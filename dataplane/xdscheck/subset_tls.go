package xdscheck

import (
	"fmt"
	"maps"
	"slices"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Names of the TLS typed configs and keys of docs/xds.md ("Identity, mTLS and
// authorization on the wire").
const (
	downstreamTLSType    protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSType      protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	tlsInspectorType     protoreflect.FullName = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	secretType           protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.Secret"
	validationType       protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext"
	systemRootCertsType  protoreflect.FullName = "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts"
	enumSANTypeDNS                             = 2 // SubjectAltNameMatcher.SanType.DNS
	enumSANTypeURI                             = 3 // SubjectAltNameMatcher.SanType.URI
	localCertificateName                       = "default"
	enumTLSv12                                 = 3 // TlsParameters.TlsProtocol.TLSv1_2
	enumTLSv13                                 = 4 // TlsParameters.TlsProtocol.TLSv1_3
	// maxListenerCertificates bounds the certificates of one HTTPS
	// listener (one per key type: RSA, ECDSA).
	maxListenerCertificates = 4
	// maxFilterChains bounds the filter chains of a listener: the HTTPS
	// listeners of one gateway port.
	maxFilterChains = 256
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
				Requires("typed_config").
				CheckedBy(upstreamContextKind(false))
	// backendTransportSocket is a cluster's own transport_socket: TLS to
	// the endpoints outside the mesh (BackendTLSPolicy), no client
	// certificate.
	backendTransportSocket = Allow("name").
				With("typed_config", Field{AnyTypes: []protoreflect.FullName{upstreamTLSType}}).
				Requires("typed_config").
				CheckedBy(upstreamContextKind(true))
)

// upstreamContextKind checks that the UpstreamTlsContext of a transport
// socket is TLS to a backend (validation_context, backend) or mesh mTLS
// (a client certificate).
func upstreamContextKind(backend bool) func(protoreflect.Message) []Violation {
	return func(m protoreflect.Message) []Violation {
		a, ok := m.Get(m.Descriptor().Fields().ByName("typed_config")).Message().Interface().(*anypb.Any)
		if !ok {
			return nil
		}
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := a.UnmarshalTo(ctx); err != nil {
			return nil // reported by the typed_config's own check
		}
		isBackend := ctx.GetCommonTlsContext().GetValidationContext() != nil
		switch {
		case backend && !isBackend:
			return []Violation{{Path: "typed_config.common_tls_context", Reason: "a cluster's transport_socket is TLS to a backend: validation_context required (mesh mTLS goes in transport_socket_matches)"}}
		case !backend && isBackend:
			return []Violation{{Path: "typed_config.common_tls_context.validation_context", Reason: "not supported in transport_socket_matches (mesh mTLS: the trust bundle over SDS)"}}
		}
		return nil
	}
}

// tlsSubset is the TLS part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): transport sockets, TLS contexts, secrets.
func tlsSubset() Rules {
	return Rules{
		// Listener side: tls_inspector and the transport protocol of a chain.
		"envoy.config.listener.v3.ListenerFilter": Allow("name").
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{tlsInspectorType}}).
			Requires("typed_config"),
		tlsInspectorType: Allow(),
		// server_names: the SNI of an HTTPS listener's chain;
		// application_protocols: the ALPN of its ACME TLS-ALPN-01
		// challenge chain ("acme-tls/1").
		"envoy.config.listener.v3.FilterChainMatch": Allow("server_names", "application_protocols").
			With("transport_protocol", Field{Values: []string{"tls", "raw_buffer"}}).
			Requires("transport_protocol"),

		// Cluster side: transport_socket_matches.
		"envoy.config.cluster.v3.Cluster.TransportSocketMatch": Allow("name", "match").
			With("transport_socket", Field{Only: upstreamTransportSocket}).
			Requires("transport_socket"),

		// TLS contexts.
		downstreamTLSType: Allow("common_tls_context", "require_client_certificate").
			Requires("common_tls_context").
			CheckedBy(checkDownstreamCertificates),
		upstreamTLSType: Allow("common_tls_context", "sni").
			Requires("common_tls_context"),
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": Allow(
			"validation_context_sds_secret_config", "combined_validation_context", "validation_context").
			// The proxy's own certificate is the local secret "default", never
			// sent over SDS (the key stays on the node); a gateway's HTTPS
			// listener presents certificates received over SDS (sds_config
			// set), chosen by the client's key types.
			With("tls_certificate_sds_secret_configs", Field{MinItems: 1, MaxItems: maxListenerCertificates, Only: Allow("name", "sds_config").
				Requires("name")}).
			With("alpn_protocols", Field{Values: []string{"h2", "http/1.1", "acme-tls/1"}}).
			With("tls_params", Field{}).
			CheckedBy(checkCommonTLSContext),
		"envoy.extensions.transport_sockets.tls.v3.TlsParameters": Allow().
			With("tls_minimum_protocol_version", Field{Enums: []protoreflect.EnumNumber{enumTLSv12, enumTLSv13}}).
			With("tls_maximum_protocol_version", Field{Enums: []protoreflect.EnumNumber{enumTLSv13}}).
			With("cipher_suites", Field{Values: CipherSuiteNames()}),
		"envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig": Allow("name", "sds_config").
			Requires("name", "sds_config"),
		"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.CombinedCertificateValidationContext": Allow(
			"default_validation_context", "validation_context_sds_secret_config").
			Requires("default_validation_context", "validation_context_sds_secret_config"),
		// In a combined validation context: the peer's SPIFFE ID. Alone
		// (TLS to a backend, a BackendTLSPolicy): the CA bundle inline or
		// the system's, and the names the backend's certificate may have.
		validationType: Allow().
			With("match_typed_subject_alt_names", Field{MinItems: 1}).
			With("trusted_ca", Field{Only: Allow("inline_bytes").Requires("inline_bytes")}).
			With("system_root_certs", Field{}).
			Requires("match_typed_subject_alt_names"),
		systemRootCertsType: Allow(),
		"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": Allow().
			With("san_type", Field{Enums: []protoreflect.EnumNumber{enumSANTypeDNS, enumSANTypeURI}}).
			With("matcher", Field{Only: Allow("exact").Requires("exact")}).
			Requires("san_type", "matcher"),

		// Secret (SDS): a trust bundle, or a listener certificate and key,
		// as PEM bytes.
		secretType: Allow("name").
			With("validation_context", Field{Only: Allow().
				With("trusted_ca", Field{Only: Allow("inline_bytes").Requires("inline_bytes")}).
				Requires("trusted_ca")}).
			With("tls_certificate", Field{Only: Allow().
				With("certificate_chain", Field{Only: Allow("inline_bytes").Requires("inline_bytes")}).
				With("private_key", Field{Only: Allow("inline_bytes").Requires("inline_bytes")}).
				Requires("certificate_chain", "private_key")}).
			Requires("name").
			CheckedBy(func(m protoreflect.Message) []Violation {
				if !m.Has(m.Descriptor().Fields().ByName("validation_context")) && !m.Has(m.Descriptor().Fields().ByName("tls_certificate")) {
					return []Violation{{Path: "validation_context", Reason: "required (or tls_certificate)"}}
				}
				return nil
			}),
	}
}

// CipherSuites maps the TLS 1.2 cipher suites an HTTPS listener may list
// in tls_params.cipher_suites (their OpenSSL names, as Envoy's) to their
// IANA names (Go's crypto/tls). TLS 1.3 suites are not configurable. Read
// only.
var CipherSuites = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

// CipherSuiteNames are the keys of CipherSuites, sorted.
func CipherSuiteNames() []string { return slices.Sorted(maps.Keys(CipherSuites)) }

// checkCertificateConfigs: the certificates of a TLS context are either
// the proxy's own (the one local secret "default", without sds_config) or
// received over SDS (each with sds_config), not both.
func checkCertificateConfigs(m protoreflect.Message) []Violation {
	list := m.Get(m.Descriptor().Fields().ByName("tls_certificate_sds_secret_configs")).List()
	var local, sds int
	for i := range list.Len() {
		c := list.Get(i).Message()
		name := c.Get(c.Descriptor().Fields().ByName("name")).String()
		hasSDS := c.Has(c.Descriptor().Fields().ByName("sds_config"))
		switch {
		case name == localCertificateName && !hasSDS:
			local++
		case name != localCertificateName && hasSDS:
			sds++
		default:
			return []Violation{{Path: "tls_certificate_sds_secret_configs", Reason: `want the local secret "default" without sds_config, or secrets received over SDS (sds_config set)`}}
		}
	}
	if local > 1 || (local > 0 && sds > 0) {
		return []Violation{{Path: "tls_certificate_sds_secret_configs", Reason: `the local secret "default" goes alone`}}
	}
	return nil
}

// checkCommonTLSContext: a TLS context either presents certificates
// (checkCertificateConfigs; the peer verified by a combined or SDS
// validation context of the mesh, SPIFFE IDs only) or, to a backend
// outside the mesh, presents none and verifies the backend by a
// validation_context: trusted_ca or system_root_certs, exactly one.
func checkCommonTLSContext(m protoreflect.Message) []Violation {
	fields := m.Descriptor().Fields()
	has := func(name protoreflect.Name) bool { return m.Has(fields.ByName(name)) }
	if has("validation_context") {
		if has("tls_certificate_sds_secret_configs") || has("combined_validation_context") || has("validation_context_sds_secret_config") {
			return []Violation{{Path: "validation_context", Reason: "goes alone: no client certificate nor other validation context with TLS to a backend"}}
		}
		v := m.Get(fields.ByName("validation_context")).Message()
		vf := v.Descriptor().Fields()
		if v.Has(vf.ByName("trusted_ca")) == v.Has(vf.ByName("system_root_certs")) {
			return []Violation{{Path: "validation_context", Reason: "want trusted_ca or system_root_certs, exactly one"}}
		}
		return nil
	}
	if !has("tls_certificate_sds_secret_configs") {
		return []Violation{{Path: "tls_certificate_sds_secret_configs", Reason: "required (or validation_context alone)"}}
	}
	if has("combined_validation_context") {
		def := m.Get(fields.ByName("combined_validation_context")).Message()
		v := def.Get(def.Descriptor().Fields().ByName("default_validation_context")).Message()
		vf := v.Descriptor().Fields()
		if v.Has(vf.ByName("trusted_ca")) || v.Has(vf.ByName("system_root_certs")) {
			return []Violation{{Path: "combined_validation_context.default_validation_context", Reason: "trusted_ca and system_root_certs: not supported here (the trust bundle is the SDS secret)"}}
		}
		sans := v.Get(vf.ByName("match_typed_subject_alt_names")).List()
		for i := range sans.Len() {
			san := sans.Get(i).Message()
			if san.Get(san.Descriptor().Fields().ByName("san_type")).Enum() != enumSANTypeURI {
				return []Violation{{Path: fmt.Sprintf("combined_validation_context.default_validation_context.match_typed_subject_alt_names[%d].san_type", i), Reason: "want URI (a SPIFFE ID) in the mesh"}}
			}
		}
	}
	return checkCertificateConfigs(m)
}

// checkDownstreamCertificates: a listener's TLS context presents
// certificates.
func checkDownstreamCertificates(m protoreflect.Message) []Violation {
	common := m.Get(m.Descriptor().Fields().ByName("common_tls_context")).Message()
	if !common.Has(common.Descriptor().Fields().ByName("tls_certificate_sds_secret_configs")) {
		return []Violation{{Path: "common_tls_context.tls_certificate_sds_secret_configs", Reason: "required"}}
	}
	return nil
}
