package extauthz

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the external authorization typed configs (docs/xds.md
// "External authorization").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)

// Bounds of a config: the header lists are tried on every header of
// every check; the body is held in memory while the check runs.
const (
	MaxHeaderPatterns = 64
	MaxRequestBytes   = 1 << 20
)

// subsetRules is the ext_authz filter's part of the subset of docs/xds.md:
// an http_service (server_uri on a cluster with its timeout, path_prefix,
// authorization_response's allowed_upstream_headers and
// allowed_client_headers), transport_api_version V3, failure_mode_allow,
// status_on_error, with_request_body (at most MaxRequestBytes) and
// allowed_headers; per route, disabled or empty check_settings. The
// header lists are ListStringMatchers of at most MaxHeaderPatterns core
// StringMatchers; or a grpc_service (envoy_grpc cluster_name and timeout,
// the core subset's). Anything else (runtime fractions,
// metadata, shadow mode...) is NACKed.
func subsetRules() xdscheck.Rules {
	list := xdscheck.Field{Only: xdscheck.Allow("patterns").
		With("patterns", xdscheck.Field{MaxItems: MaxHeaderPatterns})}
	return xdscheck.Rules{
		configType: xdscheck.Allow("failure_mode_allow").
			With("transport_api_version", xdscheck.Field{Enums: []protoreflect.EnumNumber{2}}). // V3
			With("http_service", xdscheck.Field{Only: xdscheck.Allow("server_uri", "path_prefix").
				With("authorization_response", xdscheck.Field{Only: xdscheck.Allow().
					With("allowed_upstream_headers", list).
					With("allowed_client_headers", list)}).
				Requires("server_uri")}).
			With("grpc_service", xdscheck.Field{}).
			With("status_on_error", xdscheck.Field{Only: xdscheck.Allow("code")}).
			With("with_request_body", xdscheck.Field{Only: xdscheck.Allow("max_request_bytes", "allow_partial_message").
				CheckedBy(checkBodyLimit)}).
			With("allowed_headers", list).
			CheckedBy(checkOneService),
		perRouteType: xdscheck.Allow("disabled").
			With("check_settings", xdscheck.Field{Only: xdscheck.Allow()}),
	}
}

// checkBodyLimit bounds with_request_body.max_request_bytes.
func checkBodyLimit(m protoreflect.Message) []xdscheck.Violation {
	fd := m.Descriptor().Fields().ByName("max_request_bytes")
	if n := m.Get(fd).Uint(); n > MaxRequestBytes {
		return []xdscheck.Violation{{Path: "max_request_bytes", Reason: "more than 1048576 bytes"}}
	}
	return nil
}

// checkOneService requires a service: http_service or grpc_service.
func checkOneService(m protoreflect.Message) []xdscheck.Violation {
	fields := m.Descriptor().Fields()
	if !m.Has(fields.ByName("http_service")) && !m.Has(fields.ByName("grpc_service")) {
		return []xdscheck.Violation{{Path: "services", Reason: "http_service or grpc_service is required"}}
	}
	return nil
}
