package localratelimit

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the local rate limit typed configs (docs/xds.md "Local rate
// limits"). Envoy's per-route config is a LocalRateLimit too.
const (
	configType     protoreflect.FullName = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
	tokenBucket    protoreflect.FullName = "envoy.type.v3.TokenBucket"
	descriptorType protoreflect.FullName = "envoy.extensions.common.ratelimit.v3.LocalRateLimitDescriptor"
	entryType      protoreflect.FullName = "envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry"
	rateLimitType  protoreflect.FullName = "envoy.config.route.v3.RateLimit"
	actionType     protoreflect.FullName = "envoy.config.route.v3.RateLimit.Action"
)

// Bounds of a LocalRateLimit.
const (
	maxDescriptors = 64
	maxRateLimits  = 64
	maxActions     = 8
	maxEntries     = 8
)

// enumDraft03 is XRateLimitHeadersRFCVersion DRAFT_VERSION_03.
const enumDraft03 = 1

// subsetRules is the local rate limit filter's part of the subset: a token
// bucket, filter_enabled and filter_enforced (default values only),
// descriptors with their buckets (an empty entry value is a bucket per
// distinct value, max_dynamic_descriptors of them), rate_limits whose
// actions are generic_key, remote_address, masked_remote_address,
// request_headers or metadata (source DYNAMIC, no default_value nor
// skip_if_absent), the draft-03 rate limit headers, Retry-After, and
// always_consume_default_token_bucket. Per-connection buckets, stages,
// cluster-wide buckets, custom statuses and headers to add are not
// implemented.
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType: xdscheck.Allow("stat_prefix", "token_bucket", "filter_enabled", "filter_enforced",
			"enable_retry_after_header", "always_consume_default_token_bucket", "max_dynamic_descriptors").
			With("enable_x_ratelimit_headers", xdscheck.Field{Enums: []protoreflect.EnumNumber{0, enumDraft03}}).
			With("descriptors", xdscheck.Field{MaxItems: maxDescriptors}).
			With("rate_limits", xdscheck.Field{MaxItems: maxRateLimits}).
			Requires("stat_prefix"),
		tokenBucket: xdscheck.Allow("max_tokens", "tokens_per_fill", "fill_interval").Requires("max_tokens", "fill_interval"),
		descriptorType: xdscheck.Allow("token_bucket").
			With("entries", xdscheck.Field{MinItems: 1, MaxItems: maxEntries}).
			Requires("entries", "token_bucket"),
		entryType:     xdscheck.Allow("key", "value").Requires("key"),
		rateLimitType: xdscheck.Allow().With("actions", xdscheck.Field{MinItems: 1, MaxItems: maxActions}).Requires("actions"),
		actionType:    xdscheck.Allow("generic_key", "remote_address", "masked_remote_address", "request_headers", "metadata"),
		"envoy.config.route.v3.RateLimit.Action.GenericKey":          xdscheck.Allow("descriptor_value", "descriptor_key").Requires("descriptor_value"),
		"envoy.config.route.v3.RateLimit.Action.RemoteAddress":       xdscheck.Allow(),
		"envoy.config.route.v3.RateLimit.Action.MaskedRemoteAddress": xdscheck.Allow("v4_prefix_mask_len", "v6_prefix_mask_len"),
		"envoy.config.route.v3.RateLimit.Action.RequestHeaders":      xdscheck.Allow("header_name", "descriptor_key").Requires("header_name", "descriptor_key"),
		"envoy.config.route.v3.RateLimit.Action.MetaData": xdscheck.Allow("descriptor_key", "metadata_key").
			With("source", xdscheck.Field{Enums: []protoreflect.EnumNumber{0}}).
			Requires("descriptor_key", "metadata_key"),
		"envoy.type.metadata.v3.MetadataKey": xdscheck.Allow("key").
			With("path", xdscheck.Field{MinItems: 1, MaxItems: maxActions}).Requires("key", "path"),
		"envoy.type.metadata.v3.MetadataKey.PathSegment": xdscheck.Allow("key").Requires("key"),
	}
}
