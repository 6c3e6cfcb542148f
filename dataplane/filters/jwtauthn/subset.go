package jwtauthn

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the JWT authentication typed configs (docs/xds.md "JWT
// authentication").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
)

// subsetRules is the JWT filter's part of the xDS subset: providers with
// issuer, audiences, remote (http_uri, cache_duration) or local (inline or
// file) JWKS, token locations, forward, clock skew, claim headers and the
// payload in metadata; rules matching a path prefix and a requirement map
// of provider_name, requires_any, requires_all and allow_missing; per route
// a requirement name or disabled. HttpUri keeps its core rule (uri and
// cluster required); the DataSource of local_jwks also takes a filename.
func subsetRules() xdscheck.Rules {
	requirement := xdscheck.Allow("provider_name", "requires_any", "requires_all", "allow_missing")
	return xdscheck.Rules{
		configType:   xdscheck.Allow("providers", "rules", "requirement_map"),
		perRouteType: xdscheck.Allow("disabled", "requirement_name"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtProvider": xdscheck.Allow("issuer", "audiences",
			"remote_jwks", "forward", "from_headers", "from_params", "from_cookies", "payload_in_metadata",
			"normalize_payload_in_metadata", "clock_skew_seconds", "claim_to_headers", "require_expiration").
			With("local_jwks", xdscheck.Field{Only: xdscheck.Allow("inline_string", "filename")}),
		"envoy.extensions.filters.http.jwt_authn.v3.RemoteJwks":                   xdscheck.Allow("http_uri", "cache_duration").Requires("http_uri"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtHeader":                    xdscheck.Allow("name", "value_prefix").Requires("name"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtProvider.NormalizePayload": xdscheck.Allow("space_delimited_claims"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtClaimToHeader":             xdscheck.Allow("header_name", "claim_name").Requires("header_name", "claim_name"),
		"envoy.extensions.filters.http.jwt_authn.v3.RequirementRule": xdscheck.Allow("requires", "requirement_name").
			With("match", xdscheck.Field{Only: xdscheck.Allow("prefix")}).Requires("match"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtRequirement":        requirement,
		"envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementOrList":  xdscheck.Allow("requirements"),
		"envoy.extensions.filters.http.jwt_authn.v3.JwtRequirementAndList": xdscheck.Allow("requirements"),
		"google.protobuf.Empty": xdscheck.Allow(),
	}
}
