package httpfilter

import (
	"context"

	"github.com/meshgate/meshgate/dataplane/peer"
)

// Authentication kinds of an Auth.
const (
	AuthJWT    = "jwt"
	AuthAPIKey = "apikey"
	AuthBasic  = "basic"
)

// Auth is what an authentication filter (JWT, API key, basic auth)
// established about the caller of one request. It is immutable once set
// on the request's context (WithAuth); filters further down the chain
// (authorization, rate limits, caching), the access log and the trace read
// it.
type Auth struct {
	// Principal is the authenticated caller: the JWT's sub claim, the API
	// consumer's name, the basic-auth user.
	Principal string
	// Kind is AuthJWT, AuthAPIKey or AuthBasic.
	Kind string
	// Provider names what authenticated the request: the JWT provider, the
	// API-key or basic-auth filter.
	Provider string
	// MetadataNamespace and MetadataKey say where Envoy would put the
	// authentication's result in the request's dynamic metadata (for a
	// JWT: envoy.filters.http.jwt_authn and its provider's
	// payload_in_metadata); Metadata is that value (the JWT payload, with
	// space-delimited claims normalized to lists). RBAC metadata matchers
	// read it.
	MetadataNamespace, MetadataKey string
	Metadata                       map[string]any
	// Consumer is the declared consumer the caller is, "" for none: an
	// API key's client and a basic-auth user are declared by their
	// filter's config; a JWT subject is one when its provider's consumers
	// list it (the consumers filter sets it). Per-consumer counters
	// (StatConsumerRequests, StatConsumerRateLimited) are keyed by
	// ConsumerKey, so they are bounded by configuration.
	Consumer string
}

// ConsumerKey is the key of a's consumer in the per-consumer counters,
// "<kind>/<consumer>", or "" when a is nil or no declared consumer.
func (a *Auth) ConsumerKey() string {
	if a == nil || a.Consumer == "" {
		return ""
	}
	return a.Kind + "/" + a.Consumer
}

// StatConsumerRequests is the /stats family counting the requests of
// declared consumers, by "<kind>/<name>" (Auth.ConsumerKey): an API key's
// client, a basic-auth user (both declared in the filter's config), a JWT
// subject its provider declares a consumer; so the family is bounded by
// configuration. Other JWT subjects are not counted.
const StatConsumerRequests = "consumer_requests"

// StatConsumerRateLimited is the /stats family counting the requests of
// declared consumers that a rate limit filter (local or global) refused
// with 429, by "<kind>/<name>" (Auth.ConsumerKey). Refused requests of
// callers that are no declared consumer are not counted here (the
// filters' own families count every refusal).
const StatConsumerRateLimited = "consumer_rate_limited"

// CountConsumerRateLimited counts a 429 of the request of ctx in
// counters (the StatConsumerRateLimited family) when its caller is a
// declared consumer. Called on refusals only: it costs nothing to the
// requests that pass.
func CountConsumerRateLimited(ctx context.Context, counters *Counters) {
	if key := AuthFrom(ctx).ConsumerKey(); key != "" {
		counters.Inc(key)
	}
}

type authKey struct{}

// WithAuth returns a copy of ctx carrying a, for the request's remaining
// filters and the router.
func WithAuth(ctx context.Context, a *Auth) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

// AuthFrom returns the Auth an authentication filter set on the request's
// context, or nil.
func AuthFrom(ctx context.Context) *Auth {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(authKey{}).(*Auth)
	return a
}

// Principal is the request's one authenticated principal, the value rate
// limits, caches, access logs and traces key by: the principal an
// authentication filter established (AuthFrom), else the SPIFFE ID of the
// mTLS peer (peer.Identity), else "".
func Principal(ctx context.Context) string {
	if a := AuthFrom(ctx); a != nil && a.Principal != "" {
		return a.Principal
	}
	return peer.Identity(ctx)
}
