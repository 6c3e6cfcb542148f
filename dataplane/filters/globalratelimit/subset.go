package globalratelimit

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the rate limit typed configs (docs/xds.md "Global rate
// limits").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.ratelimit.v3.RateLimit"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
	serviceType  protoreflect.FullName = "envoy.config.ratelimit.v3.RateLimitServiceConfig"
	googleType   protoreflect.FullName = "envoy.config.core.v3.GrpcService.GoogleGrpc"
	// enumV3 is ApiVersion V3.
	enumV3 = 2
	// enumDraft03 is RateLimit.XRateLimitHeadersRFCVersion DRAFT_VERSION_03.
	enumDraft03 = 1
	// maxRateLimits bounds the rate_limits of a route.
	maxRateLimits = 64
)

// subsetRules is the rate limit filter's part of the subset: the domain,
// the service (a google_grpc target_uri: the proxy dials it itself, over
// plaintext, with a stat_prefix Envoy requires), the timeout, the failure
// mode and the draft-03 headers; per route, the rate_limits. The actions
// inside (envoy.config.route.v3.RateLimit and its Action) keep the rules
// of the local rate limit filter, registered with it.
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType: xdscheck.Allow("domain", "timeout", "failure_mode_deny", "rate_limit_service", "stat_prefix", "enable_retry_after_header").
			With("enable_x_ratelimit_headers", xdscheck.Field{Enums: []protoreflect.EnumNumber{0, enumDraft03}}).
			Requires("domain", "rate_limit_service"),
		perRouteType: xdscheck.Allow().With("rate_limits", xdscheck.Field{MaxItems: maxRateLimits}),
		serviceType: xdscheck.Allow().
			With("grpc_service", xdscheck.Field{Only: xdscheck.Allow("google_grpc", "timeout").Requires("google_grpc")}).
			With("transport_api_version", xdscheck.Field{Enums: []protoreflect.EnumNumber{enumV3}}).
			Requires("grpc_service"),
		googleType: xdscheck.Allow("target_uri", "stat_prefix").Requires("target_uri", "stat_prefix"),
	}
}
