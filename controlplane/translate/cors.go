package translate

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// CORSFilterName is the CORS HTTP filter
// (envoy.extensions.filters.http.cors.v3.Cors) on the listeners some of
// whose routes have a Gateway API CORS filter, first in the chain (a
// preflight is answered before authorization, as Envoy Gateway orders
// it): the key of the routes' CorsPolicy configs. A listener without such
// routes does not have it; a route without one has no CorsPolicy and
// costs nothing.
const CORSFilterName = "envoy.filters.http.cors"

// corsFilter is the CORS filter of a listener (an empty Cors).
func corsFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&corsv3.Cors{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CORSFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: CORSFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// hasCORS reports whether a rule has a CORS filter.
func hasCORS(rule *model.Rule) bool { return rule.Action.CORS != nil }

// setCORS gives a route the rule's CORS filter as the per-route CorsPolicy
// of the CORS filter, as Envoy Gateway translates it: an origin with a
// wildcard as a safe_regex (each "*" any characters, the rest literal),
// the others exact; "*" methods or headers as "*" (Envoy then echoes the
// requested ones); max_age in seconds; allow_credentials always set; and
// forward_not_matching_preflights false, so that a preflight from another
// origin is answered (without CORS headers) rather than forwarded.
func setCORS(r *routev3.Route, a *model.Action) error {
	c := a.CORS
	if c == nil {
		return nil
	}
	policy := &corsv3.CorsPolicy{
		AllowMethods:                 corsList(c.AllowMethods),
		AllowHeaders:                 corsList(c.AllowHeaders),
		ExposeHeaders:                strings.Join(c.ExposeHeaders, ", "),
		MaxAge:                       strconv.Itoa(int(c.MaxAge)),
		AllowCredentials:             wrapperspb.Bool(c.AllowCredentials),
		ForwardNotMatchingPreflights: wrapperspb.Bool(false),
	}
	for _, origin := range c.AllowOrigins {
		policy.AllowOriginStringMatch = append(policy.AllowOriginStringMatch, originMatcher(origin))
	}
	typed, err := anypb.New(policy)
	if err != nil {
		return fmt.Errorf("%s per route: %w", CORSFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[CORSFilterName] = typed
	return nil
}

// corsList is a list of methods or headers as Envoy takes it: "*" when it
// holds the wildcard, else comma-separated.
func corsList(values []string) string {
	for _, v := range values {
		if v == "*" {
			return "*"
		}
	}
	return strings.Join(values, ", ")
}

// originMatcher matches one allowed origin: exactly, or, with wildcards,
// by a regex in which each "*" is any characters.
func originMatcher(origin string) *matcherv3.StringMatcher {
	if !strings.Contains(origin, "*") {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: origin}}
	}
	regex := strings.ReplaceAll(regexp.QuoteMeta(origin), `\*`, ".*")
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: regex}}}
}
