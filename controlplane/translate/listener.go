package translate

import (
	"fmt"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Filter names.
const (
	httpConnectionManagerName = "envoy.filters.network.http_connection_manager"
	routerFilterName          = "envoy.filters.http.router"
	// webSocketUpgrade is the upgrade_type of WebSocket upgrades.
	webSocketUpgrade = "websocket"
)

// Fixed connection manager settings.
const (
	requestHeadersTimeout = 10 * time.Second
	connectionIdleTimeout = 5 * time.Minute
	maxRequestHeadersKB   = 60
	// HTTP/2 limits advertised to clients (http2_protocol_options), Envoy
	// Gateway's and Envoy's edge recommendations: a client may open 100
	// streams at once on a connection, and each stream and connection
	// buffers at most 64 KiB and 1 MiB of request body the proxy has not
	// forwarded yet (flow control holds the rest back at the client).
	http2MaxConcurrentStreams        = 100
	http2InitialStreamWindowSize     = 64 << 10
	http2InitialConnectionWindowSize = 1 << 20
)

func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// listener builds a listener whose HTTP connection manager takes its routes,
// named like the listener, over RDS, and runs the given HTTP filters (in
// that order: see httpFilters) before the router. edge: the listener
// faces external clients (a gateway's).
func listener(name, host string, port uint32, direction corev3.TrafficDirection, edge bool, filters []*hcmv3.HttpFilter) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, fmt.Errorf("listener %q: router config: %w", name, err)
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: name,
		}},
		HttpFilters: append(slices.Clone(filters), &hcmv3.HttpFilter{
			Name:       routerFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}),
		RequestHeadersTimeout: durationpb.New(requestHeadersTimeout),
		// One spelling per path for routing and authorization: a policy on
		// /admin/* must not be bypassed with /%61dmin or /x/../admin.
		NormalizePath:             wrapperspb.Bool(true),
		MergeSlashes:              true,
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(connectionIdleTimeout)},
		MaxRequestHeadersKb:       wrapperspb.UInt32(maxRequestHeadersKB),
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
			MaxConcurrentStreams:        wrapperspb.UInt32(http2MaxConcurrentStreams),
			InitialStreamWindowSize:     wrapperspb.UInt32(http2InitialStreamWindowSize),
			InitialConnectionWindowSize: wrapperspb.UInt32(http2InitialConnectionWindowSize),
		},
		// WebSocket upgrades on every route, as Envoy Gateway and Istio
		// enable them: a Service port needs no appProtocol kubernetes.io/ws.
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: webSocketUpgrade}},
	}
	// The Host header is forwarded as the client sent it, port included
	// (no strip_any_host_port): a gateway's route configurations ignore the
	// port when they choose the virtual host (ignore_port_in_host_matching);
	// a sidecar's outbound one uses it to select the port of the called
	// service; the inbound one has the single domain "*".
	if edge {
		hcm.UseRemoteAddress = wrapperspb.Bool(true)
	}
	hcmAny, err := anypb.New(hcm)
	if err != nil {
		return nil, fmt.Errorf("listener %q: connection manager: %w", name, err)
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(host, port),
		TrafficDirection: direction,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       httpConnectionManagerName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
			}},
		}},
	}, nil
}

// listenerFilters says which HTTP filters a listener runs before the
// router, and with what listener-level config: each feature that is an
// HTTP filter has its field.
type listenerFilters struct {
	// rbac: the RBAC filters enforce authorization at the listener, or
	// stand by for the per-route configs of its routes (rbac.go).
	rbac bool
	// authorization is what the RBAC filters enforce at the listener
	// level; nil: nothing (the routes' per-route configs decide).
	authorization *model.Authorization
	// authentication is what the JWT filter requires on every path of
	// the listener (nil: nothing), and routeAuthentications what routes of
	// the listener require in its place (jwt.go).
	authentication       *model.Authentication
	routeAuthentications []*model.Authentication
	// headerMutation: a route of the listener modifies headers (header.go).
	headerMutation bool
	// cors: a route of the listener has a CORS filter (cors.go).
	cors bool
	// fault: a route of the listener injects faults (trafficpolicy.go).
	fault bool
	// buffer: a route of the listener limits request bodies
	// (trafficpolicy.go).
	buffer bool
	// grpcWeb: a route of the gateway listener forwards to a gRPC (HTTP/2)
	// backend (grpcweb.go).
	grpcWeb bool
	// responseLimit: a route of the listener limits response bodies
	// (trafficpolicy.go).
	responseLimit bool
	// extAuth are the distinct external authorizations of the listener's
	// routes, by filter name (extauthz.go).
	extAuth []*model.ExtAuth
	// openAPI: a route of the listener validates requests against an
	// OpenAPI document (openapi.go).
	openAPI bool
	// cache: a route of the gateway listener caches responses, in a cache
	// of cacheBytes (0: the default) (responsecache.go).
	cache      bool
	cacheBytes int64
	// localRateLimit: a route of the listener has a local rate limit
	// (ratelimit.go).
	localRateLimit bool
	// rateLimitService: a route of the listener has a global rate limit,
	// checked with this service (ratelimit.go); globalDeny: one of them
	// denies when the service fails.
	rateLimitService *model.RateLimitService
	globalDeny       bool
}

// setGlobalRateLimit adds a global rate limit to the filters when has (and
// the mesh has a rate-limit service), denying on failure when deny.
func (f *listenerFilters) setGlobalRateLimit(m *model.Model, has, deny bool) {
	if has && m.Mesh.RateLimitService != nil {
		f.rateLimitService = m.Mesh.RateLimitService
		f.globalDeny = f.globalDeny || deny
	}
}

// need adds what rules need of a listener's filters: the RBAC filters for
// route-level authorizations, the header mutation filter for header
// modifiers.
func (f *listenerFilters) need(rules []*model.Rule) {
	for _, r := range rules {
		f.rbac = f.rbac || r.Authorization != nil
		if r.Authentication != nil && !slices.Contains(f.routeAuthentications, r.Authentication) {
			f.routeAuthentications = append(f.routeAuthentications, r.Authentication)
		}
		f.headerMutation = f.headerMutation || modifiesHeaders(r)
		f.cors = f.cors || hasCORS(r)
		f.addExtAuth(r.Action.ExtAuth)
	}
}

// httpFilters is the HTTP filter chain of a listener before the router, in
// the order requests meet them: CORS first (a preflight is answered before
// anything else), then the gRPC-Web translation (it sees every response the
// others answer), then authentication (JWT, with the consumers filter naming
// its declared consumers right after, API keys, basic auth), then
// the external authorizations (extauthz.go, after authentication as in Envoy
// Gateway), then authorization (the deny, then the allow filter: a denied
// request goes no further), then the local rate limit (a denied request
// takes no token) and the global rate limit, then request validation (of the
// request as the client sent it, once it may go on), then the header
// mutation, fault, buffer and response limit filters, and the response cache
// last (what it serves from the cache has passed authentication,
// authorization and rate limits, and the response filters before it see hits
// as they see misses).
func httpFilters(name string, want listenerFilters) ([]*hcmv3.HttpFilter, error) {
	var out []*hcmv3.HttpFilter
	if want.cors {
		f, err := corsFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.grpcWeb {
		gw, err := grpcWebFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, gw)
	}
	if anyAuthn(want, func(a *model.Authentication) bool { return len(a.JWT) > 0 }) {
		jwt, err := jwtHTTPFilter(want.authentication, want.routeAuthentications)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, jwt)
		consumers, err := consumersHTTPFilter(want.authentication, want.routeAuthentications)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if consumers != nil {
			out = append(out, consumers)
		}
	}
	if anyAuthn(want, func(a *model.Authentication) bool { return a.APIKey != nil }) {
		f, err := apiKeyHTTPFilter(want.authentication)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if anyAuthn(want, func(a *model.Authentication) bool { return a.Basic != nil }) {
		f, err := basicAuthHTTPFilter(want.authentication, want.routeAuthentications)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	for _, ea := range want.extAuth {
		f, err := extAuthzFilter(ea)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.rbac {
		rbac, err := rbacHTTPFilters(want.authorization)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, rbac...)
	}
	if want.localRateLimit {
		f, err := localRateLimitFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.rateLimitService != nil {
		f, err := globalRateLimitFilter(want.rateLimitService, want.globalDeny)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.openAPI {
		f, err := openAPIFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.headerMutation {
		hm, err := headerMutationFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, hm)
	}
	if want.fault {
		f, err := faultFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.buffer {
		f, err := bufferFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.responseLimit {
		f, err := responseLimitFilter()
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	if want.cache {
		f, err := responseCacheFilter(want.cacheBytes)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		out = append(out, f)
	}
	return out, nil
}
