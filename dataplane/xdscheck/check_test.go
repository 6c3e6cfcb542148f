package xdscheck

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// fullRouteConfig populates every supported RouteConfiguration field.
func fullRouteConfig() *routev3.RouteConfiguration {
	hdr := &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: "x-a", Value: "1"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
	return &routev3.RouteConfiguration{
		Name: "rc",
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "vh",
			Domains: []string{"example.com", "*.example.com", "*"},
			Routes: []*routev3.Route{
				{
					Match: &routev3.RouteMatch{
						PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"},
						CaseSensitive: wrapperspb.Bool(false),
						Headers: []*routev3.HeaderMatcher{
							{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}},
							{Name: "x-r", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a.*"}}}}},
							{Name: "x-p", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "a"}, IgnoreCase: true}}},
							{Name: "x-s", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "a"}}}},
							{Name: "x-c", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "a"}}}},
							{Name: "x-present", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true},
						},
						QueryParameters: []*routev3.QueryParameterMatcher{
							{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "1"}}}},
							{Name: "r", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[0-9]+"}}}}},
							{Name: "p", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
						},
					},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
							Clusters: []*routev3.WeightedCluster_ClusterWeight{
								{Name: "a", Weight: wrapperspb.UInt32(90)},
								{Name: "b", Weight: wrapperspb.UInt32(10)},
							},
						}},
						Timeout:                     durationpb.New(3 * time.Second),
						PrefixRewrite:               "/v2",
						HostRewriteSpecifier:        &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "up.internal"},
						ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR,
					}},
					RequestHeadersToAdd:     []*corev3.HeaderValueOption{hdr},
					RequestHeadersToRemove:  []string{"x-b"},
					ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hdr},
					ResponseHeadersToRemove: []string{"server"},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/re/.*"}}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"},
						RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
							Pattern:      &matcherv3.RegexMatcher{Regex: "^/re/(.*)$"},
							Substitution: `/\1`,
						},
					}},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}},
					Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
						SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
						HostRedirect:           "example.org",
						PortRedirect:           8443,
						PathRewriteSpecifier:   &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"},
						ResponseCode:           routev3.RedirectAction_PERMANENT_REDIRECT,
						StripQuery:             true,
					}},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/p"}},
					Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
						PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/q"},
					}},
				},
				{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
						Status: 418,
						Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot"}},
					}},
				},
			},
		}},
	}
}

func fullHCM(t *testing.T, inline bool) *hcmv3.HttpConnectionManager {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:                "edge",
		CodecType:                 hcmv3.HttpConnectionManager_AUTO,
		HttpFilters:               []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
		StripMatchingHostPort:     false,
		UseRemoteAddress:          wrapperspb.Bool(true),
		RequestHeadersTimeout:     durationpb.New(10 * time.Second),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Hour)},
		MaxRequestHeadersKb:       wrapperspb.UInt32(64),
		StripPortMode:             &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
	}
	if inline {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: fullRouteConfig()}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: "rc"}}
	}
	return h
}

func listenerWith(t *testing.T, h proto.Message) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name: "edge",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080},
		}}},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)},
		}}}},
	}
}

func socket(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func fullCLA() *endpointv3.ClusterLoadAssignment {
	labels, _ := structpb.NewStruct(map[string]any{"version": "v1"})
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: "default/orders:80",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket("127.0.0.1", 9000)}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(2),
			Metadata:            &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"meshgate": labels}},
		}}}},
	}
}

func fullCluster(t *testing.T, eds bool) *clusterv3.Cluster {
	opts := &upstreamhttpv3.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		},
	}}
	c := &clusterv3.Cluster{
		Name:           "default/orders:80",
		ConnectTimeout: durationpb.New(time.Second),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, opts),
		},
	}
	if eds {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		c.LoadAssignment = fullCLA()
	}
	return c
}

func TestCheckAcceptsSupportedSubset(t *testing.T) {
	t.Parallel()
	http1 := fullCluster(t, false)
	http1.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			}},
		}),
	}
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{"listener with rds", listenerWith(t, fullHCM(t, false))},
		{"listener with inline route config", listenerWith(t, fullHCM(t, true))},
		{"route configuration", fullRouteConfig()},
		{"eds cluster", fullCluster(t, true)},
		{"static cluster with h2c", fullCluster(t, false)},
		{"static cluster with http1", http1},
		{"minimal cluster", &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}}},
		{"cluster load assignment", fullCLA()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := Check(tt.msg); err != nil {
				t.Fatalf("Check() = %v, want nil", err)
			}
		})
	}
}

func TestCheckRejectsUnsupported(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     func(t *testing.T) proto.Message
		wantErr string
	}{
		{
			name: "filter chain match",
			msg: func(t *testing.T) proto.Message {
				l := listenerWith(t, fullHCM(t, false))
				l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls", DestinationPort: wrapperspb.UInt32(443)}
				return l
			},
			wantErr: `listener "edge": filter_chains[0].filter_chain_match: prefix_ranges and destination_port need the original_dst listener filter`,
		},
		{
			name: "more filter chains than HTTPS listeners can need",
			msg: func(t *testing.T) proto.Message {
				l := listenerWith(t, fullHCM(t, false))
				for range 256 {
					l.FilterChains = append(l.FilterChains, l.FilterChains[0])
				}
				return l
			},
			wantErr: `listener "edge": filter_chains: at most 256 entries supported, got 257`,
		},
		{
			name: "listener filter",
			msg: func(t *testing.T) proto.Message {
				l := listenerWith(t, fullHCM(t, false))
				l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "tls_inspector"}}
				return l
			},
			wantErr: `listener "edge": listener_filters[0].typed_config: required`,
		},
		{
			name: "udp socket address",
			msg: func(t *testing.T) proto.Message {
				l := listenerWith(t, fullHCM(t, false))
				l.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
				return l
			},
			wantErr: `listener "edge": address.socket_address.protocol: value UDP not supported`,
		},
		{
			name: "unknown network filter type",
			msg: func(t *testing.T) proto.Message {
				return listenerWith(t, &routerv3.Router{})
			},
			wantErr: `listener "edge": filter_chains[0].filters[0].typed_config: typed config "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" not supported`,
		},
		{
			name: "hcm field inside Any",
			msg: func(t *testing.T) proto.Message {
				h := fullHCM(t, false)
				h.GenerateRequestId = wrapperspb.Bool(true)
				return listenerWith(t, h)
			},
			wantErr: `listener "edge": filter_chains[0].filters[0].typed_config.generate_request_id: not supported`,
		},
		{
			name: "http3 codec",
			msg: func(t *testing.T) proto.Message {
				h := fullHCM(t, false)
				h.CodecType = hcmv3.HttpConnectionManager_HTTP3
				return listenerWith(t, h)
			},
			wantErr: `typed_config.codec_type: value HTTP3 not supported`,
		},
		{
			name: "non-ADS rds config source",
			msg: func(t *testing.T) proto.Message {
				h := fullHCM(t, false)
				h.GetRds().ConfigSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Self{Self: &corev3.SelfConfigSource{}}}
				return listenerWith(t, h)
			},
			wantErr: `filter_chains[0].filters[0].typed_config.rds.config_source.self: not supported`,
		},
		{
			name: "http filter other than router",
			msg: func(t *testing.T) proto.Message {
				h := fullHCM(t, false)
				h.HttpFilters[0].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &hcmv3.Rds{})}
				return listenerWith(t, h)
			},
			wantErr: `http_filters[0].typed_config: typed config "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.Rds" not supported`,
		},
		{
			name: "route retry policy condition",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[1].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,refused-stream"}
				return rc
			},
			wantErr: `route configuration "rc": virtual_hosts[0].routes[1].route.retry_policy.retry_on: condition "refused-stream" not supported`,
		},
		{
			name: "route retry policy budget",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[1].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx",
					RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: "x"}}
				return rc
			},
			wantErr: `route configuration "rc": virtual_hosts[0].routes[1].route.retry_policy.retry_priority: not supported`,
		},
		{
			name: "route retry host predicate",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[1].GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx",
					RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.omit_canary_hosts"}}}
				return rc
			},
			wantErr: `route configuration "rc": virtual_hosts[0].routes[1].route.retry_policy.retry_host_predicate[0].name: value "envoy.retry_host_predicates.omit_canary_hosts" not supported`,
		},
		{
			name: "route mirror runtime key",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[1].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
					Cluster: "c", RuntimeFraction: &corev3.RuntimeFractionalPercent{RuntimeKey: "k", DefaultValue: &typev3.FractionalPercent{Numerator: 1}},
				}}
				return rc
			},
			wantErr: `route configuration "rc": virtual_hosts[0].routes[1].route.request_mirror_policies[0].runtime_fraction.runtime_key: not supported`,
		},
		{
			name: "unknown cluster_not_found_response_code",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[1].GetRoute().ClusterNotFoundResponseCode = 7
				return rc
			},
			wantErr: `invalid RouteAction.ClusterNotFoundResponseCode: value must be one of the defined enum values`,
		},
		{
			name: "query parameter prefix match",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].Routes[0].Match.QueryParameters[0].GetStringMatch().MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: "x"}
				return rc
			},
			wantErr: `route configuration "rc": virtual_hosts[0].routes[0].match.query_parameters[0].string_match.prefix: not supported`,
		},
		{
			name: "vhost level headers",
			msg: func(t *testing.T) proto.Message {
				rc := fullRouteConfig()
				rc.VirtualHosts[0].RequestHeadersToRemove = []string{"a"}
				return rc
			},
			wantErr: `virtual_hosts[0].request_headers_to_remove: not supported`,
		},
		{
			name: "cluster lb policy",
			msg: func(t *testing.T) proto.Message {
				c := fullCluster(t, true)
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				return c
			},
			wantErr: `cluster "default/orders:80": lb_policy: CLUSTER_PROVIDED goes with type ORIGINAL_DST, and only with it`,
		},
		{
			name: "strict dns cluster",
			msg: func(t *testing.T) proto.Message {
				c := fullCluster(t, false)
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
				return c
			},
			wantErr: `cluster "default/orders:80": type: value STRICT_DNS not supported`,
		},
		{
			name: "upstream connection options and unknown protocol options key",
			msg: func(t *testing.T) proto.Message {
				c := fullCluster(t, true)
				c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{}
				c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"] = mustAny(t, &routerv3.Router{})
				return c
			},
			wantErr: `cluster "default/orders:80": upstream_connection_options: not supported; cluster "default/orders:80": typed_extension_protocol_options["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"]: not supported`,
		},
		{
			name: "auto upstream protocol",
			msg: func(t *testing.T) proto.Message {
				c := fullCluster(t, true)
				c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = mustAny(t, &upstreamhttpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &upstreamhttpv3.HttpProtocolOptions_AutoHttpConfig{}},
				})
				return c
			},
			wantErr: `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].auto_config: not supported`,
		},
		{
			name: "endpoint locality region and foreign metadata",
			msg: func(t *testing.T) proto.Message {
				cla := fullCLA()
				cla.Endpoints[0].Locality = &corev3.Locality{Zone: "a", Region: "eu"}
				cla.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["istio"] = &structpb.Struct{}
				return cla
			},
			wantErr: `cluster load assignment "default/orders:80": endpoints[0].locality.region: not supported; cluster load assignment "default/orders:80": endpoints[0].lb_endpoints[0].metadata.filter_metadata["istio"]: not supported`,
		},
		{
			name: "fails Validate",
			msg: func(t *testing.T) proto.Message {
				return &listenerv3.Listener{Name: "bad", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: ""}}}}}
			},
			wantErr: `listener "bad": invalid:`,
		},
		{
			name: "unknown resource type",
			msg: func(t *testing.T) proto.Message {
				return &corev3.Node{Id: "x"}
			},
			wantErr: `node: message type envoy.config.core.v3.Node not supported`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Check(tt.msg(t))
			if err == nil {
				t.Fatalf("Check() = nil, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckReturnsStructuredError(t *testing.T) {
	t.Parallel()
	c := fullCluster(t, true)
	c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	var checkErr *Error
	if err := Check(c); !errors.As(err, &checkErr) {
		t.Fatalf("Check() = %v, want *Error", err)
	}
	if len(checkErr.Violations) != 1 || checkErr.Violations[0].Path != "dns_lookup_family" {
		t.Fatalf("violations = %+v, want one at dns_lookup_family", checkErr.Violations)
	}
	if Check(nil) == nil {
		t.Fatal("Check(nil) = nil, want error")
	}
}
