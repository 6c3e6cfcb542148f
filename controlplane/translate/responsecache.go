package translate

import (
	"fmt"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// ResponseCacheFilterName is meshgate's response cache HTTP filter on the
// gateway listeners some of whose routes have a TrafficPolicy cache
// section. Envoy's cache filter (envoy.extensions.filters.http.cache.v3.
// CacheConfig) has no per-route config, TTL override, per-principal key or
// byte budget, so the filter is meshgate's own, configured with an
// xds.type.v3.TypedStruct of type_url ResponseCacheTypeURL: at the
// listener {max_cache_bytes: N}, and on each cached route a per-route
// envoy.config.route.v3.FilterConfig with the route's settings; the
// other routes need nothing (they are not cached). The entry and the
// per-route configs are optional (is_optional): an Envoy given the same
// xDS skips the filter and serves every response uncached.
const ResponseCacheFilterName = "meshgate.filters.http.cache"

// ResponseCacheTypeURL is the TypedStruct type_url of the response cache
// filter (dataplane/filters/cache).
const ResponseCacheTypeURL = "meshgate.dev/filters.http.cache.v1.Cache"

// defaultCacheBytes is a gateway listener's cache budget when none of its
// routes sets maxCacheBytes (64 MiB).
const defaultCacheBytes = 64 << 20

// hasCache reports whether traffic t caches responses.
func hasCache(t *model.RouteTraffic) bool { return t != nil && t.Cache != nil }

// cacheBudget is the byte budget of a gateway listener's cache: the
// largest maxCacheBytes of its cached routes (rules at a port with outer
// traffic), at least the current one.
func cacheBudget(m *model.Model, rules []*model.Rule, outer *model.RouteTraffic, current int64) int64 {
	for _, r := range rules {
		var portRoute *model.RouteTraffic
		if port := backendPort(m, r.Action); port != nil {
			portRoute = port.RouteTraffic
		}
		if t := model.EffectiveRouteTraffic(r.Traffic, outer, portRoute); hasCache(t) && t.Cache.MaxCacheBytes != nil {
			current = max(current, *t.Cache.MaxCacheBytes)
		}
	}
	return current
}

// responseCacheFilter is the response cache filter of a listener with a
// budget of maxBytes (0: the default).
func responseCacheFilter(maxBytes int64) (*hcmv3.HttpFilter, error) {
	if maxBytes == 0 {
		maxBytes = defaultCacheBytes
	}
	typed, err := deterministicAny(&xdstypev3.TypedStruct{TypeUrl: ResponseCacheTypeURL, Value: &structpb.Struct{
		Fields: map[string]*structpb.Value{"max_cache_bytes": structpb.NewNumberValue(float64(maxBytes))}}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ResponseCacheFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: ResponseCacheFilterName, IsOptional: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// setResponseCaches gives the forwarding routes rs of rules (in rule
// order: one route per rule, two for a PathPrefix, see pathPrefixRoutes; at
// a gateway port with outer traffic) whose traffic has a cache section the
// cache filter's per-route config.
func setResponseCaches(m *model.Model, rs []*routev3.Route, rules []*model.Rule, outer *model.RouteTraffic) error {
	next := 0
	for _, r := range rules {
		n := 1
		if _, separated := separatedPrefix(r.Match.Path); separated {
			n = 2
		}
		if next+n > len(rs) {
			return fmt.Errorf("response cache: %d routes for %d rules", len(rs), len(rules))
		}
		own := rs[next : next+n]
		next += n
		var portRoute *model.RouteTraffic
		if port := backendPort(m, r.Action); port != nil {
			portRoute = port.RouteTraffic
		}
		t := model.EffectiveRouteTraffic(r.Traffic, outer, portRoute)
		if !hasCache(t) {
			continue
		}
		for _, route := range own {
			if route.GetRoute() == nil {
				continue
			}
			if err := setResponseCache(route, t.Cache); err != nil {
				return err
			}
		}
	}
	return nil
}

// setResponseCache gives a route the per-route config of the response
// cache filter.
func setResponseCache(r *routev3.Route, c *policy.ResponseCache) error {
	value, err := responseCacheValue(c)
	if err != nil {
		return fmt.Errorf("%s per route: %w", ResponseCacheFilterName, err)
	}
	ts, err := deterministicAny(&xdstypev3.TypedStruct{TypeUrl: ResponseCacheTypeURL, Value: value})
	if err != nil {
		return fmt.Errorf("%s per route: %w", ResponseCacheFilterName, err)
	}
	typed, err := anypb.New(&routev3.FilterConfig{Config: ts, IsOptional: true})
	if err != nil {
		return fmt.Errorf("%s per route: %w", ResponseCacheFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[ResponseCacheFilterName] = typed
	return nil
}

// responseCacheValue is the per-route value of a cache section.
func responseCacheValue(c *policy.ResponseCache) (*structpb.Struct, error) {
	fields := map[string]*structpb.Value{}
	ttl, err := policy.ParseDuration(c.TTL)
	if c.TTL != "" {
		if err != nil {
			return nil, fmt.Errorf("ttl: %w", err)
		}
		fields["ttl_seconds"] = structpb.NewNumberValue(float64(int64(ttl.Seconds())))
	}
	swr, err := policy.ParseDuration(c.StaleWhileRevalidate)
	if c.StaleWhileRevalidate != "" {
		if err != nil {
			return nil, fmt.Errorf("staleWhileRevalidate: %w", err)
		}
		fields["stale_while_revalidate_seconds"] = structpb.NewNumberValue(float64(int64(swr.Seconds())))
	}
	if c.Shared {
		fields["shared"] = structpb.NewBoolValue(true)
	}
	if c.MaxEntryBytes != nil {
		fields["max_body_bytes"] = structpb.NewNumberValue(float64(*c.MaxEntryBytes))
	}
	for _, l := range []struct {
		field  string
		values []string
	}{{"query_parameters", c.QueryParameters}, {"headers", c.Headers}, {"allowed_vary_headers", c.AllowedVaryHeaders}} {
		if l.values == nil {
			continue
		}
		list := make([]*structpb.Value, len(l.values))
		for i, v := range l.values {
			list[i] = structpb.NewStringValue(v)
		}
		fields[l.field] = structpb.NewListValue(&structpb.ListValue{Values: list})
	}
	return &structpb.Struct{Fields: fields}, nil
}
