package xdscheck

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestL4Subset: a listener's chains carry a tcp_proxy (network RBAC
// filters before it) or an HttpConnectionManager, all of one kind.
func TestL4Subset(t *testing.T) {
	t.Parallel()
	filter := func(name string, m proto.Message) *listenerv3.Filter {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
	}
	tcp := filter("tcp", &tcpproxyv3.TcpProxy{StatPrefix: "x", IdleTimeout: durationpb.New(0),
		ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
			Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 3}, {Name: "b", Weight: 1}}}}})
	router, _ := anypb.New(&routerv3.Router{})
	hcm := filter("hcm", &hcmv3.HttpConnectionManager{StatPrefix: "x",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}}})
	rbac := filter("rbac", &netrbacv3.RBAC{StatPrefix: "x"})
	listener := func(chains ...[]*listenerv3.Filter) *listenerv3.Listener {
		l := &listenerv3.Listener{Name: "l", Address: socket("127.0.0.1", 80)}
		for _, fs := range chains {
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Filters: fs})
		}
		return l
	}
	for _, tt := range []struct {
		name string
		l    *listenerv3.Listener
		want string // "" accepted
	}{
		{"tcp_proxy", listener([]*listenerv3.Filter{tcp}), ""},
		{"network RBAC then tcp_proxy", listener([]*listenerv3.Filter{rbac, rbac, tcp}), ""},
		{"tcp_proxy then network RBAC", listener([]*listenerv3.Filter{tcp, rbac}), "filters[0]: only network RBAC filters may precede the last filter"},
		{"network RBAC before a connection manager", listener([]*listenerv3.Filter{rbac, hcm}), "network RBAC filters are followed by a tcp_proxy"},
		{"mixed chains", listener([]*listenerv3.Filter{hcm}, []*listenerv3.Filter{tcp}), "filter_chains[1].filters: every filter chain of a listener must carry the same kind of filter"},
	} {
		err := Check(tt.l)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestL4Termination: a tcp_proxy chain may terminate TLS with
// certificates received over SDS when the tls_inspector chooses it
// (transport_protocol "tls"), with no ALPN, application_protocols or
// client certificate.
func TestL4Termination(t *testing.T) {
	t.Parallel()
	tp, err := anypb.New(&tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "db"}})
	if err != nil {
		t.Fatal(err)
	}
	inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		t.Fatal(err)
	}
	listener := func(match *listenerv3.FilterChainMatch, ctx *tlsv3.DownstreamTlsContext) *listenerv3.Listener {
		ts, err := anypb.New(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return &listenerv3.Listener{Name: "l", Address: socket("127.0.0.1", 443),
			ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector}}},
			FilterChains: []*listenerv3.FilterChain{{
				FilterChainMatch: match,
				Filters:          []*listenerv3.Filter{{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}},
				TransportSocket:  &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts}},
			}}}
	}
	sds := func(alpn ...string) *tlsv3.DownstreamTlsContext {
		return &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "listener-cert/default/db",
				SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}}}}
	}
	tlsMatch := &listenerv3.FilterChainMatch{TransportProtocol: "tls", ServerNames: []string{"db.example.com"}}
	for _, tt := range []struct {
		name string
		l    *listenerv3.Listener
		want string // "" accepted
	}{
		{"terminated by SNI", listener(tlsMatch, sds()), ""},
		{"no transport protocol", listener(&listenerv3.FilterChainMatch{ServerNames: []string{"db.example.com"}}, sds()), `filter_chain_match.transport_protocol: "tls" required`},
		{"ALPN", listener(tlsMatch, sds("h2")), "alpn_protocols: not supported on a tcp_proxy chain"},
		{"application protocols", listener(&listenerv3.FilterChainMatch{TransportProtocol: "tls", ServerNames: []string{"db.example.com"}, ApplicationProtocols: []string{"x"}}, sds()), "application_protocols: not supported"},
	} {
		err := Check(tt.l)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
