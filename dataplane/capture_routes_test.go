package dataplane

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCaptureChainsServeTheirOwnRoutes: a capture listener whose HTTP
// chains carry connection managers on different route configurations (a
// service port each, as the control plane sends) serves each chain's
// connections with that chain's routes, whatever their Host header; chains
// carrying the same connection manager share its server.
func TestCaptureChainsServeTheirOwnRoutes(t *testing.T) {
	t.Parallel()
	p := newApplyProxy(t)
	backends := map[string]string{"a": backend(t, "a"), "b": backend(t, "b")}
	var clusters, endpoints, routes []proto.Message
	for name, addr := range backends {
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		})
		endpoints = append(endpoints, &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(t, addr)}},
			}}}},
		})
		routes = append(routes, &routev3.RouteConfiguration{
			Name: "capture|" + name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
				}},
			}},
		})
	}
	hcm := func(route string) *listenerv3.Filter {
		return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: mustAny(t, &hcmv3.HttpConnectionManager{
				StatPrefix:     "capture",
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: route}},
				HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{
					TypedConfig: mustAny(t, &routerv3.Router{})}}},
			})}}
	}
	chain := func(name, addr, route string) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{hcm(route)}, FilterChainMatch: &listenerv3.FilterChainMatch{
			PrefixRanges:         []*corev3.CidrRange{{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(32)}},
			DestinationPort:      wrapperspb.UInt32(80),
			TransportProtocol:    "raw_buffer",
			ApplicationProtocols: []string{"http/1.1"},
		}}
	}
	listener := &listenerv3.Listener{
		Name:    "capture",
		Address: socketAddress(t, "127.0.0.1:0"),
		ListenerFilters: []*listenerv3.ListenerFilter{
			{Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &originaldstv3.OriginalDst{})}},
			{Name: "envoy.filters.listener.http_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &httpinspectorv3.HttpInspector{})}},
		},
		FilterChains: []*listenerv3.FilterChain{
			chain("a", "10.0.0.1", "capture|a"),
			chain("b", "10.0.0.2", "capture|b"),
			chain("a-endpoint", "10.0.1.1", "capture|a"), // the same manager as "a"
		},
	}
	for _, step := range []struct {
		typ  resourcev3.Type
		msgs []proto.Message
	}{
		{resourcev3.ClusterType, clusters}, {resourcev3.EndpointType, endpoints},
		{resourcev3.ListenerType, []proto.Message{listener}}, {resourcev3.RouteType, routes},
	} {
		if err := p.apply(context.Background(), step.typ, step.msgs, "v1"); err != nil {
			t.Fatalf("apply %s: %v", step.typ, err)
		}
	}

	p.mu.Lock()
	spec := p.state.listeners["capture"]
	var srv *server
	for _, s := range p.servers {
		if s.listener == "capture" {
			srv = s
		}
	}
	p.mu.Unlock()
	if srv == nil || spec == nil {
		t.Fatal("no capture listener served")
	}
	var gotIdx []int
	for _, c := range spec.capture.chains {
		gotIdx = append(gotIdx, c.httpIdx)
	}
	if len(spec.captureHTTP) != 2 || len(srv.subs) != 1 || gotIdx[0] != 0 || gotIdx[1] != 1 || gotIdx[2] != 0 {
		t.Fatalf("%d connection managers, %d sub servers, chains on %v; want 2, 1, [0 1 0]", len(spec.captureHTTP), len(srv.subs), gotIdx)
	}
	cs := srv.http.(*captureServer)
	// A connection as the capture server hands it to the server of the
	// chain it matched, with another service's name in Host.
	for idx, tc := range []struct{ host, want string }{{host: "b", want: "a"}, {host: "a", want: "b"}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		served, err := ln.Accept()
		_ = ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !cs.queues[idx].push(served) {
			t.Fatal("queue closed")
		}
		if _, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		_ = client.Close()
		if resp.StatusCode != http.StatusOK || string(body) != tc.want {
			t.Errorf("chain server %d, Host %q: %d %q, want 200 %q", idx, tc.host, resp.StatusCode, body, tc.want)
		}
	}

	// An update whose chains all carry one manager: one server, no subs.
	one := proto.CloneOf(listener)
	one.FilterChains[1] = chain("b", "10.0.0.2", "capture|a")
	if err := p.apply(context.Background(), resourcev3.ListenerType, []proto.Message{one}, "v2"); err != nil {
		t.Fatalf("apply the update: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	spec = p.state.listeners["capture"]
	for _, s := range p.servers {
		if s.listener == "capture" && (len(s.subs) != 0 || len(spec.captureHTTP) != 1 || len(s.http.(*captureServer).queues) != 1) {
			t.Errorf("after the update: %d sub servers, %d connection managers; want 0, 1", len(s.subs), len(spec.captureHTTP))
		}
	}
}
