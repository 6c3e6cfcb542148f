package policy

import gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

// Rate limits of a TrafficPolicy (the rateLimit section), after Envoy
// Gateway's BackendTrafficPolicy rateLimit: token buckets per route, per
// Gateway listener or per Service port, each keyed by what a request
// carries. Local limits are counted by each proxy on its own; global limits
// by the rate-limit service (meshgate ratelimit), shared by every replica.

// Units of a rate limit.
const (
	RateLimitSecond = "Second"
	RateLimitMinute = "Minute"
	RateLimitHour   = "Hour"
	RateLimitDay    = "Day"
)

// RateLimitUnits are the units of a rate limit, in the order they are
// listed to users.
var RateLimitUnits = []string{RateLimitSecond, RateLimitMinute, RateLimitHour, RateLimitDay}

// Failure modes of a global rate limit: what the proxy does with a request
// when the rate-limit service cannot answer.
const (
	RateLimitFailAllow = "Allow"
	RateLimitFailDeny  = "Deny"
)

// MaxRateLimitKeys bounds the distinct keys (client addresses, header
// values) a proxy keeps a local bucket for, per rule: past it, the least
// recently used key's bucket is dropped, so a flood of keys cannot exhaust
// the proxy's memory.
const MaxRateLimitKeys = 100_000

// DefaultRateLimitKeys is the number of keys kept per rule when the policy
// sets no maxKeys.
const DefaultRateLimitKeys = 10_000

// RateLimit is the rateLimit section: local limits, global limits or both
// (a request must pass each).
type RateLimit struct {
	// Local limits are counted by each proxy: with N gateway replicas, a
	// client gets up to N times the limit.
	Local *LocalRateLimit `json:"local,omitempty"`
	// Global limits are counted by the rate-limit service, shared by every
	// proxy that calls it.
	Global *GlobalRateLimit `json:"global,omitempty"`
}

// LocalRateLimit is the local part of a rateLimit section.
type LocalRateLimit struct {
	// Rules are the limits; a request is limited by every rule whose key it
	// has, and by the first rule without a key when no keyed rule applies.
	Rules []RateLimitRule `json:"rules"`
	// MaxKeys bounds the keys a proxy keeps a bucket for, per keyed rule
	// (default DefaultRateLimitKeys, at most MaxRateLimitKeys): the least
	// recently used key's bucket is dropped first.
	MaxKeys *int32 `json:"maxKeys,omitempty"`
}

// GlobalRateLimit is the global part of a rateLimit section.
type GlobalRateLimit struct {
	// Rules are the limits, counted by the rate-limit service.
	Rules []RateLimitRule `json:"rules"`
	// FailureMode is what happens to a request when the rate-limit service
	// (or its store) does not answer: Allow (the default) lets it through,
	// Deny answers 500. A listener has one failure mode: Deny when one of
	// its routes' policies says so.
	FailureMode string `json:"failureMode,omitempty"`
}

// RateLimitRule is one token bucket and what it is kept per.
type RateLimitRule struct {
	// Limit is the bucket: Requests per Unit, up to Burst at once.
	Limit RateLimitValue `json:"limit"`
	// Key is what the requests are counted per; none: every request to the
	// target shares one bucket.
	Key *RateLimitKey `json:"key,omitempty"`
}

// RateLimitValue is a token bucket: Requests tokens per Unit, holding at
// most Burst (default Requests). A global limit counts Requests per window
// of one Unit, aligned on the clock, and has no Burst.
type RateLimitValue struct {
	Requests int32  `json:"requests"`
	Unit     string `json:"unit"`
	Burst    *int32 `json:"burst,omitempty"`
}

// RateLimitKey is what a rule counts requests per: exactly one of them.
type RateLimitKey struct {
	// ClientIP keeps a bucket per client address (the downstream
	// connection's), or per network of it with a prefix length.
	ClientIP *ClientIPKey `json:"clientIP,omitempty"`
	// Header keeps a bucket per value of a request header; requests without
	// it are not limited by the rule.
	Header string `json:"header,omitempty"`
	// Principal keeps a bucket per authenticated caller: the JWT's sub, the
	// API consumer, the basic-auth user, else the mTLS peer's SPIFFE ID;
	// requests without one are not limited by the rule.
	Principal *PrincipalKey `json:"principal,omitempty"`
	// Claim keeps a bucket per value of a claim of the request's verified
	// JWT (a string claim); requests without it are not limited by the
	// rule.
	Claim *ClaimKey `json:"claim,omitempty"`
}

// PrincipalKey is a principal key ({}): it has no fields.
type PrincipalKey struct{}

// ClaimKey is a claim key: the JWT claim's name.
type ClaimKey struct {
	// Name is a top-level claim of the token's payload (e.g. "tenant").
	Name string `json:"name"`
}

// DefaultRateLimitTimeout is how long a proxy waits for the rate-limit
// service when the MeshConfig sets no timeout.
const DefaultRateLimitTimeout = "100ms"

// RateLimitService is a MeshConfig's rateLimitService: where the proxies
// ask about global limits.
type RateLimitService struct {
	// Address is the service's gRPC address, host:port (meshgate ratelimit
	// --listen). Required.
	Address string `json:"address"`
	// Timeout bounds each check (default DefaultRateLimitTimeout); past it,
	// the policy's failureMode applies.
	Timeout gwapiv1.Duration `json:"timeout,omitempty"`
}

// ClientIPKey is a clientIP key: with prefix lengths, the addresses of one
// network share a bucket.
type ClientIPKey struct {
	// PrefixLength is the IPv4 prefix length (1-32, default 32: each
	// address): 24 counts each /24.
	PrefixLength *int32 `json:"prefixLength,omitempty"`
	// PrefixLengthV6 is the IPv6 prefix length (1-128, default 128).
	PrefixLengthV6 *int32 `json:"prefixLengthV6,omitempty"`
}
