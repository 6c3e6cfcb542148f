package translate

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"
	basicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// API keys and basic auth on the wire (docs/xds.md "API keys", "Basic
// auth").
const (
	// APIKeyFilterName is the HTTP filter (api_key_auth.v3.ApiKeyAuth) of
	// SecurityPolicy spec.apiKey; BasicAuthFilterName (basic_auth.v3.BasicAuth)
	// that of spec.basicAuth.
	APIKeyFilterName    = "meshgate.api_key_auth"
	BasicAuthFilterName = "meshgate.basic_auth"
	// AuthnMetadataNamespace is where the proxy's API key and basic-auth
	// filters put the authenticated principal ({"principal": {"name": ...}});
	// RBAC principals match it. It is meshgate's: an Envoy sets nothing there.
	AuthnMetadataNamespace = "meshgate.authn"
	// apiKeyHashPrefix marks a credential key that is the key's SHA-256.
	apiKeyHashPrefix = "sha256:"
)

// anyAuthn reports whether the listener-level or some route-level
// authentication of want has has.
func anyAuthn(want listenerFilters, has func(*model.Authentication) bool) bool {
	if want.authentication != nil && has(want.authentication) {
		return true
	}
	for _, a := range want.routeAuthentications {
		if has(a) {
			return true
		}
	}
	return false
}

// authnPerRoute are the per-route configs of a route's authentication, by
// filter name: of each kind it has, which replaces the listener's kind.
func authnPerRoute(a *model.Authentication) (map[string]*anypb.Any, error) {
	out := map[string]*anypb.Any{}
	if len(a.JWT) > 0 {
		typed, err := jwtPerRoute(a)
		if err != nil {
			return nil, err
		}
		out[JWTFilterName] = typed
	}
	if a.APIKey != nil {
		creds, sources, fwd := apiKeyParts(a.APIKey)
		typed, err := deterministicAny(&apikeyv3.ApiKeyAuthPerRoute{Credentials: creds, KeySources: sources, Forwarding: fwd})
		if err != nil {
			return nil, fmt.Errorf("%s per route: %w", APIKeyFilterName, err)
		}
		out[APIKeyFilterName] = typed
	}
	if a.Basic != nil {
		typed, err := deterministicAny(&basicv3.BasicAuthPerRoute{Users: inline(a.Basic.Htpasswd)})
		if err != nil {
			return nil, fmt.Errorf("%s per route: %w", BasicAuthFilterName, err)
		}
		out[BasicAuthFilterName] = typed
	}
	return out, nil
}

func deterministicAny(m proto.Message) (*anypb.Any, error) {
	typed := new(anypb.Any)
	if err := anypb.MarshalFrom(typed, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return typed, nil
}

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

// apiKeyParts: a credential per key hash ("sha256:<hex>", the proxy
// compares the SHA-256 of the presented key), the key sources (default
// X-API-Key) and the forwarding of the consumer's name.
func apiKeyParts(k *model.APIKeyAuthn) ([]*apikeyv3.Credential, []*apikeyv3.KeySource, *apikeyv3.Forwarding) {
	var creds []*apikeyv3.Credential
	for _, c := range k.Consumers {
		for _, h := range c.SHA256s {
			creds = append(creds, &apikeyv3.Credential{Key: apiKeyHashPrefix + h, Client: c.Name})
		}
	}
	var sources []*apikeyv3.KeySource
	for _, h := range k.Headers {
		sources = append(sources, &apikeyv3.KeySource{Header: h})
	}
	for _, q := range k.Params {
		sources = append(sources, &apikeyv3.KeySource{Query: q})
	}
	for _, c := range k.Cookies {
		sources = append(sources, &apikeyv3.KeySource{Cookie: c})
	}
	if len(sources) == 0 {
		sources = []*apikeyv3.KeySource{{Header: "x-api-key"}}
	}
	var fwd *apikeyv3.Forwarding
	if k.ForwardHeader != "" || !k.Forward {
		fwd = &apikeyv3.Forwarding{Header: k.ForwardHeader, HideCredentials: !k.Forward}
	}
	return creds, sources, fwd
}

// apiKeyHTTPFilter is the API key filter of a listener: the listener-level
// keys, or none (the routes' per-route configs decide; without one a
// request passes).
func apiKeyHTTPFilter(listener *model.Authentication) (*hcmv3.HttpFilter, error) {
	cfg := &apikeyv3.ApiKeyAuth{}
	if listener != nil && listener.APIKey != nil {
		cfg.Credentials, cfg.KeySources, cfg.Forwarding = apiKeyParts(listener.APIKey)
	}
	typed, err := deterministicAny(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", APIKeyFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: APIKeyFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// basicAuthHTTPFilter is the basic-auth filter of a listener, like
// apiKeyHTTPFilter. forward_username_header has no per-route form: the
// listener's, else the first route's that sets one, applies to all.
func basicAuthHTTPFilter(listener *model.Authentication, routes []*model.Authentication) (*hcmv3.HttpFilter, error) {
	cfg := &basicv3.BasicAuth{}
	if listener != nil && listener.Basic != nil {
		cfg.Users = inline(strings.TrimSpace(listener.Basic.Htpasswd) + "\n")
		cfg.ForwardUsernameHeader = listener.Basic.ForwardHeader
	}
	for _, a := range routes {
		if cfg.ForwardUsernameHeader == "" && a.Basic != nil {
			cfg.ForwardUsernameHeader = a.Basic.ForwardHeader
		}
	}
	typed, err := deterministicAny(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BasicAuthFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: BasicAuthFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// authnPrincipal matches the principal an API key or basic-auth filter
// established: one of names.
func authnPrincipal(names []string) *rbacv3.Principal {
	path := []*matcherv3.MetadataMatcher_PathSegment{
		{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "principal"}},
		{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "name"}},
	}
	ids := make([]*rbacv3.Principal, 0, len(names))
	for _, n := range names {
		ids = append(ids, namespacedPrincipal(AuthnMetadataNamespace, path,
			&matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: stringMatcher(n, false)}}))
	}
	return orIDs(ids)
}
