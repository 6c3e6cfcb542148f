package translate

import (
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// A TrafficPolicy's rateLimit.local on the wire (docs/traffic.md, "Rate
// limits on the wire"), after Envoy Gateway's translation of a
// BackendTrafficPolicy's local rate limit:
//
//   - the listeners some of whose routes have one carry the
//     envoy.filters.http.local_ratelimit filter with a LocalRateLimit that
//     has only a stat_prefix: it limits nothing (filter_enabled unset is
//     0%);
//   - each such route has a per-route LocalRateLimit: filter_enabled and
//     filter_enforced 100%, the keyless rule's bucket as token_bucket (else
//     an unlimited one), one descriptor per keyed rule whose entries are
//     ("rule", "rule-<i>") and the key's entry with an empty value (a
//     bucket per distinct value, at most max_dynamic_descriptors of them,
//     least recently used dropped first), the rate_limits that make those
//     descriptors (generic_key, then remote_address, masked_remote_address,
//     request_headers, or metadata: for a principal key
//     meshgate.authn/principal/name, for a claim key
//     envoy.filters.http.jwt_authn/jwt_payload/<claim>), always_consume_default_token_bucket false,
//     enable_x_ratelimit_headers DRAFT_VERSION_03 and
//     enable_retry_after_header.

// A TrafficPolicy's rateLimit.global on the wire, after Envoy Gateway's
// global rate limit: the listeners some of whose routes have one carry the
// envoy.filters.http.ratelimit filter (RateLimit: domain "meshgate", the
// MeshConfig's rate-limit service as a google_grpc target_uri, its
// timeout, failure_mode_deny when one of those routes' policies says Deny,
// the draft-03 headers and Retry-After), and each such route a
// RateLimitPerRoute whose rate_limits make one descriptor per rule:
// generic_key ("rule", "<namespace>/<policy>/<i>"), generic_key ("limit",
// "<requests>/<unit>"): the limit the service applies, then the key's
// action when the rule has one.

// GlobalRateLimitFilterName is the rate limit HTTP filter
// (envoy.extensions.filters.http.ratelimit.v3.RateLimit).
const GlobalRateLimitFilterName = "envoy.filters.http.ratelimit"

// globalRateLimitDomain is the domain of every global rate limit check.
const globalRateLimitDomain = "meshgate"

// Descriptor keys of a global rule's limit (ratelimit.LimitKey).
const rateLimitLimitKey = "limit"

// globalRateLimitFilter is the global rate limit filter of a listener.
func globalRateLimitFilter(svc *model.RateLimitService, deny bool) (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&ratelimitv3.RateLimit{
		Domain:          globalRateLimitDomain,
		Timeout:         durationpb.New(svc.Timeout),
		FailureModeDeny: deny,
		RateLimitService: &ratelimitconfigv3.RateLimitServiceConfig{
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{
				GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: svc.Address, StatPrefix: "ratelimit"}}},
		},
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03,
		EnableRetryAfterHeader:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", GlobalRateLimitFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: GlobalRateLimitFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// globalRateLimitPerRoute is the per-route RateLimitPerRoute of a
// rateLimit.global section of the policy named policyName.
func globalRateLimitPerRoute(g *policy.GlobalRateLimit, policyName string) *ratelimitv3.RateLimitPerRoute {
	out := &ratelimitv3.RateLimitPerRoute{}
	for i, r := range g.Rules {
		rl := &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{
			genericKey(rateLimitRuleKey, policyName+"/"+strconv.Itoa(i)),
			genericKey(rateLimitLimitKey, strconv.Itoa(int(r.Limit.Requests))+"/"+r.Limit.Unit),
		}}
		if r.Key != nil {
			action, _ := keyAction(r.Key)
			rl.Actions = append(rl.Actions, action)
		}
		out.RateLimits = append(out.RateLimits, rl)
	}
	return out
}

func genericKey(key, value string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
		DescriptorKey: key, DescriptorValue: value}}}
}

// hasGlobalRateLimit reports whether traffic t has a global rate limit.
func hasGlobalRateLimit(t *model.RouteTraffic) bool {
	return t != nil && t.RateLimit != nil && t.RateLimit.Global != nil
}

// deniesOnFailure reports whether traffic t has a global rate limit whose
// failure mode is Deny.
func deniesOnFailure(t *model.RouteTraffic) bool {
	return hasGlobalRateLimit(t) && t.RateLimit.Global.FailureMode == policy.RateLimitFailDeny
}

// LocalRateLimitFilterName is the local rate limit HTTP filter
// (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit) on the
// listeners some of whose routes have a rateLimit.local section. A listener
// without such routes does not have the filter.
const LocalRateLimitFilterName = "envoy.filters.http.local_ratelimit"

// localRateLimitStatPrefix is the stat_prefix of every LocalRateLimit.
const localRateLimitStatPrefix = "http_local_rate_limiter"

// Descriptor keys of the rate_limits actions.
const (
	rateLimitRuleKey          = "rule"
	rateLimitRemoteAddressKey = "remote_address"
	rateLimitMaskedAddressKey = "masked_remote_address"
	rateLimitHeaderKey        = "header"
	rateLimitPrincipalKey     = "principal"
	rateLimitClaimKey         = "claim"
)

// unlimitedBucket is the token_bucket of a LocalRateLimit whose rules all
// have a key: it never runs out within its fill interval.
func unlimitedBucket() *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: 1<<32 - 1, TokensPerFill: wrapperspb.UInt32(1<<32 - 1), FillInterval: durationpb.New(policy.RateLimitUnitDuration(policy.RateLimitSecond))}
}

// tokenBucket is the bucket of a rule: Requests per Unit, up to Burst.
func tokenBucket(v policy.RateLimitValue) *typev3.TokenBucket {
	burst := v.Requests
	if v.Burst != nil {
		burst = *v.Burst
	}
	return &typev3.TokenBucket{
		MaxTokens:     uint32(burst),
		TokensPerFill: wrapperspb.UInt32(uint32(v.Requests)),
		FillInterval:  durationpb.New(policy.RateLimitUnitDuration(v.Unit)),
	}
}

// rateLimitRuleValue is the value of a rule's generic_key entry.
func rateLimitRuleValue(i int) string { return "rule-" + strconv.Itoa(i) }

// keyAction is the rate_limits action of a rule's key, and its descriptor
// key.
func keyAction(k *policy.RateLimitKey) (*routev3.RateLimit_Action, string) {
	switch {
	case k.Principal != nil:
		// meshgate's authentication filters put the principal there
		// (AuthnMetadataNamespace); the proxy reads it as the request's one
		// principal: the JWT's sub, the API consumer, the basic-auth user,
		// else the mTLS peer's SPIFFE ID.
		return metadataAction(rateLimitPrincipalKey, AuthnMetadataNamespace, "principal", "name"), rateLimitPrincipalKey
	case k.Claim != nil:
		// jwt_authn's payload_in_metadata.
		return metadataAction(rateLimitClaimKey, JWTMetadataNamespace, JWTPayloadKey, k.Claim.Name), rateLimitClaimKey
	case k.Header != "":
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: strings.ToLower(k.Header), DescriptorKey: rateLimitHeaderKey}}}, rateLimitHeaderKey
	case k.ClientIP != nil && (k.ClientIP.PrefixLength != nil || k.ClientIP.PrefixLengthV6 != nil):
		masked := &routev3.RateLimit_Action_MaskedRemoteAddress{}
		if v := k.ClientIP.PrefixLength; v != nil {
			masked.V4PrefixMaskLen = wrapperspb.UInt32(uint32(*v))
		}
		if v := k.ClientIP.PrefixLengthV6; v != nil {
			masked.V6PrefixMaskLen = wrapperspb.UInt32(uint32(*v))
		}
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_MaskedRemoteAddress_{MaskedRemoteAddress: masked}}, rateLimitMaskedAddressKey
	}
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}}, rateLimitRemoteAddressKey
}

// metadataAction is a rate_limits metadata action making the entry
// (descriptorKey, the string at path in the request's dynamic metadata
// namespace ns); a request without it makes no descriptor.
func metadataAction(descriptorKey, ns string, path ...string) *routev3.RateLimit_Action {
	segs := make([]*metadatav3.MetadataKey_PathSegment, len(path))
	for i, p := range path {
		segs[i] = &metadatav3.MetadataKey_PathSegment{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: p}}
	}
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
		DescriptorKey: descriptorKey,
		MetadataKey:   &metadatav3.MetadataKey{Key: ns, Path: segs},
		Source:        routev3.RateLimit_Action_MetaData_DYNAMIC,
	}}}
}

// rateLimitActions is the rate_limits entry of the keyed rule i: its
// generic_key, then its key's action; and the descriptor key of the latter.
func rateLimitActions(i int, k *policy.RateLimitKey) (*routev3.RateLimit, string) {
	action, key := keyAction(k)
	return &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{
		{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
			DescriptorKey: rateLimitRuleKey, DescriptorValue: rateLimitRuleValue(i)}}},
		action,
	}}, key
}

// localRateLimitFilter is the local rate limit filter of a listener.
func localRateLimitFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&localratelimitv3.LocalRateLimit{StatPrefix: localRateLimitStatPrefix})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", LocalRateLimitFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: LocalRateLimitFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// fullPercent is a filter_enabled or filter_enforced of 100% (without a
// runtime key: the proxy has no runtime).
func fullPercent() *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
	}
}

// localRateLimitPerRoute is the per-route LocalRateLimit of a
// rateLimit.local section.
func localRateLimitPerRoute(l *policy.LocalRateLimit) *localratelimitv3.LocalRateLimit {
	maxKeys := int32(policy.DefaultRateLimitKeys)
	if l.MaxKeys != nil {
		maxKeys = *l.MaxKeys
	}
	out := &localratelimitv3.LocalRateLimit{
		StatPrefix:                      localRateLimitStatPrefix,
		FilterEnabled:                   fullPercent(),
		FilterEnforced:                  fullPercent(),
		EnableXRatelimitHeaders:         ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		EnableRetryAfterHeader:          true,
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		MaxDynamicDescriptors:           wrapperspb.UInt32(uint32(maxKeys)),
	}
	for i, r := range l.Rules {
		if r.Key == nil {
			out.TokenBucket = tokenBucket(r.Limit)
			continue
		}
		actions, key := rateLimitActions(i, r.Key)
		out.RateLimits = append(out.RateLimits, actions)
		out.Descriptors = append(out.Descriptors, &ratelimitcommonv3.LocalRateLimitDescriptor{
			Entries: []*ratelimitcommonv3.RateLimitDescriptor_Entry{
				{Key: rateLimitRuleKey, Value: rateLimitRuleValue(i)},
				{Key: key},
			},
			TokenBucket: tokenBucket(r.Limit),
		})
	}
	if out.TokenBucket == nil {
		out.TokenBucket = unlimitedBucket()
	}
	return out
}

// setRateLimit gives a route the per-route configs of the rateLimit
// section of traffic t (none: nothing); the global part only when the mesh
// has a rate-limit service (the listener has the filter then).
func setRateLimit(m *model.Model, r *routev3.Route, t *model.RouteTraffic) error {
	if t == nil || t.RateLimit == nil {
		return nil
	}
	set := func(name string, msg proto.Message) error {
		typed, err := anypb.New(msg)
		if err != nil {
			return fmt.Errorf("%s per route: %w", name, err)
		}
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[name] = typed
		return nil
	}
	if l := t.RateLimit.Local; l != nil {
		if err := set(LocalRateLimitFilterName, localRateLimitPerRoute(l)); err != nil {
			return err
		}
	}
	if g := t.RateLimit.Global; g != nil && m.Mesh.RateLimitService != nil {
		if err := set(GlobalRateLimitFilterName, globalRateLimitPerRoute(g, t.RateLimitPolicy)); err != nil {
			return err
		}
	}
	return nil
}

// hasLocalRateLimit reports whether traffic t has a local rate limit.
func hasLocalRateLimit(t *model.RouteTraffic) bool {
	return t != nil && t.RateLimit != nil && t.RateLimit.Local != nil
}
