package translate

import (
	"fmt"
	"net/url"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// JWT authentication on the wire (docs/xds.md "JWT authentication").
const (
	// JWTFilterName is the HTTP filter (jwt_authn.v3.JwtAuthentication)
	// verifying the tokens of SecurityPolicy spec.jwt.
	JWTFilterName = "meshgate.jwt_authn"
	// JWTMetadataNamespace is where Envoy's jwt_authn filter puts a
	// verified payload in the dynamic metadata, under JWTPayloadKey; RBAC
	// principals match claims there.
	JWTMetadataNamespace = "envoy.filters.http.jwt_authn"
	JWTPayloadKey        = "jwt_payload"
	// jwksClusterPrefix names, in http_uri.cluster, the upstream of a
	// remote JWKS: "jwks|host:port". The meshgate proxy fetches http_uri.uri
	// itself (system trust roots); an Envoy needs that cluster defined.
	jwksClusterPrefix = "jwks|"
)

// jwtHTTPFilter is the JWT filter of a listener: every provider of the
// listener-level authentication (required on every path, rules) and of the
// routes' (requirement_map, named by Authentication.RequirementName, which
// the routes' PerRouteConfig select).
func jwtHTTPFilter(listener *model.Authentication, routes []*model.Authentication) (*hcmv3.HttpFilter, error) {
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	for _, a := range append([]*model.Authentication{listener}, routes...) {
		if a == nil || len(a.JWT) == 0 {
			continue
		}
		for _, p := range a.JWT {
			if _, done := cfg.Providers[p.Name]; !done {
				cfg.Providers[p.Name] = jwtProvider(p)
			}
		}
		if a != listener {
			if cfg.RequirementMap == nil {
				cfg.RequirementMap = map[string]*jwtv3.JwtRequirement{}
			}
			cfg.RequirementMap[a.RequirementName()] = jwtRequirement(a)
		}
	}
	if listener != nil && len(listener.JWT) > 0 {
		cfg.Rules = []*jwtv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: jwtRequirement(listener)},
		}}
	}
	// Deterministic: providers and requirement_map are maps, and equal
	// configurations must be equal bytes.
	typed := new(anypb.Any)
	if err := anypb.MarshalFrom(typed, cfg, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("%s: %w", JWTFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: JWTFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// jwtPerRoute selects a route's requirement in the JWT filter's
// requirement_map.
func jwtPerRoute(a *model.Authentication) (*anypb.Any, error) {
	typed, err := anypb.New(&jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: a.RequirementName()},
	})
	if err != nil {
		return nil, fmt.Errorf("%s per route: %w", JWTFilterName, err)
	}
	return typed, nil
}

// jwtRequirement: a token of one of a's providers, or none when a is
// optional.
func jwtRequirement(a *model.Authentication) *jwtv3.JwtRequirement {
	reqs := make([]*jwtv3.JwtRequirement, 0, len(a.JWT)+1)
	for _, p := range a.JWT {
		reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: p.Name}})
	}
	if a.Optional {
		reqs = append(reqs, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	}
	if len(reqs) == 1 {
		return reqs[0]
	}
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
		RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: reqs},
	}}
}

func jwtProvider(p *model.JWTProvider) *jwtv3.JwtProvider {
	out := &jwtv3.JwtProvider{
		Issuer:            p.Issuer,
		Audiences:         slices.Clone(p.Audiences),
		Forward:           p.Forward,
		FromParams:        slices.Clone(p.Params),
		FromCookies:       slices.Clone(p.Cookies),
		ClockSkewSeconds:  uint32(p.ClockSkew.Seconds()),
		PayloadInMetadata: JWTPayloadKey,
		NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{
			SpaceDelimitedClaims: []string{"scope"},
		},
	}
	for _, h := range p.Headers {
		out.FromHeaders = append(out.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.ValuePrefix})
	}
	for _, ch := range p.ClaimToHeaders {
		out.ClaimToHeaders = append(out.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: ch.Header, ClaimName: ch.Claim})
	}
	switch {
	case p.RemoteURI != "":
		host := p.RemoteURI
		if u, err := url.Parse(p.RemoteURI); err == nil {
			host = u.Host
			if u.Port() == "" {
				host += ":443"
			}
		}
		out.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              p.RemoteURI,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksClusterPrefix + host},
				Timeout:          durationpb.New(p.FetchTimeout),
			},
			CacheDuration: durationpb.New(p.CacheDuration),
		}}
	case p.File != "":
		out.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_Filename{Filename: p.File},
		}}
	default:
		out.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: p.InlineJWKS},
		}}
	}
	return out
}

// claimPrincipal matches one claim of the verified JWT in the dynamic
// metadata: a string equal to one of the values, or a list holding one.
func claimPrincipal(c model.ClaimMatch) *rbacv3.Principal {
	if c.Principal {
		// A JWT's sub, or the principal an API key or basic-auth filter
		// established (meshgate's metadata: an Envoy has none).
		return orIDs([]*rbacv3.Principal{
			claimPrincipal(model.ClaimMatch{Path: []string{"sub"}, Values: c.Values}),
			authnPrincipal(c.Values),
		})
	}
	path := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: JWTPayloadKey}}}
	for _, key := range c.Path {
		path = append(path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: key}})
	}
	ids := make([]*rbacv3.Principal, 0, 2*len(c.Values))
	for _, v := range c.Values {
		exact := stringMatcher(v, false)
		ids = append(ids,
			metadataPrincipal(path, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact}}),
			metadataPrincipal(path, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
				MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: &matcherv3.ValueMatcher{
					MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact},
				}},
			}}}))
	}
	return orIDs(ids)
}

func metadataPrincipal(path []*matcherv3.MetadataMatcher_PathSegment, value *matcherv3.ValueMatcher) *rbacv3.Principal {
	return namespacedPrincipal(JWTMetadataNamespace, path, value)
}

func namespacedPrincipal(namespace string, path []*matcherv3.MetadataMatcher_PathSegment, value *matcherv3.ValueMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
		MetadataMatcher: &matcherv3.MetadataMatcher{Filter: namespace, Path: path, Value: value},
		MetadataSource:  rbacv3.MetadataSource_DYNAMIC,
	}}}
}
