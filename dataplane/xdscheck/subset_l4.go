package xdscheck

import (
	"slices"
	"strconv"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	// The L4 typed configs, registered for Any resolution.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TCPProxyType is the config of the network filter that proxies a
// connection's bytes to a cluster (docs/xds.md, "TCP proxying").
const TCPProxyType protoreflect.FullName = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

// NetworkRBACType is the config of the network filter that authorizes a
// connection by its peer (SPIFFE ID, address) before a tcp_proxy: its
// rules are those of the HTTP RBAC filter (dataplane/filters/rbac), whose
// principals only a connection can match.
const NetworkRBACType protoreflect.FullName = "envoy.extensions.filters.network.rbac.v3.RBAC"

// MaxWeightedClusters bounds a tcp_proxy's weighted_clusters.
const MaxWeightedClusters = 64

// l4Subset is the TCP proxying part of docs/xds.md: a tcp_proxy to one
// cluster or to weighted clusters, with an idle timeout and access logs.
func l4Subset() Rules {
	return Rules{
		TCPProxyType: Allow("stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log").
			Requires("stat_prefix"),
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster": Allow().
			With("clusters", Field{MinItems: 2, MaxItems: MaxWeightedClusters}),
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight": Allow("name", "weight").
			Requires("name"),
		NetworkRBACType: Allow("rules", "stat_prefix").Requires("stat_prefix"),
	}
}

// extendL4 lets a listener's filter be a tcp_proxy, and requires a
// listener's filter chains to be all of one kind: HTTP connection
// managers, or tcp_proxies.
func extendL4(subset Rules) {
	subset["envoy.config.listener.v3.Filter"].With("typed_config", Field{AnyTypes: []protoreflect.FullName{hcmType, TCPProxyType, NetworkRBACType}})
	subset["envoy.config.listener.v3.Listener"].CheckedBy(checkChainKinds)
	subset["envoy.config.listener.v3.FilterChain"].
		With("filters", Field{MinItems: 1, MaxItems: maxChainFilters}).
		CheckedBy(checkChainFilters)
}

// maxChainFilters bounds a chain's filters: the two network RBAC filters
// (deny, allow) and the tcp_proxy.
const maxChainFilters = 3

// checkChainFilters: a chain's filters are an HttpConnectionManager alone,
// or network RBAC filters then a tcp_proxy.
func checkChainFilters(m protoreflect.Message) []Violation {
	filters := m.Get(m.Descriptor().Fields().ByName("filters")).List()
	n := filters.Len()
	for i := range n {
		kind := typedConfigName(filters.Get(i).Message())
		path := "filters[" + strconv.Itoa(i) + "]"
		switch {
		case i == n-1 && kind == NetworkRBACType:
			return []Violation{{Path: path, Reason: "a network RBAC filter must be followed by a tcp_proxy"}}
		case i < n-1 && kind != NetworkRBACType:
			return []Violation{{Path: path, Reason: "only network RBAC filters may precede the last filter (a tcp_proxy)"}}
		case n > 1 && i == n-1 && kind != TCPProxyType:
			return []Violation{{Path: path, Reason: "network RBAC filters are followed by a tcp_proxy"}}
		}
	}
	if n > 0 && typedConfigName(filters.Get(n-1).Message()) == TCPProxyType {
		return checkL4Termination(m)
	}
	return nil
}

// checkL4Termination: a tcp_proxy chain that terminates TLS with
// certificates received over SDS (a gateway's TLS listener in mode
// Terminate) is chosen by the tls_inspector (transport_protocol "tls"),
// by server name only, and negotiates no ALPN and no client certificate:
// the bytes after the handshake are the backend's.
func checkL4Termination(m protoreflect.Message) []Violation {
	chain, ok := m.Interface().(*listenerv3.FilterChain)
	if !ok || chain.GetTransportSocket() == nil {
		return nil
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	if chain.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx) != nil {
		return nil // the transport socket's own rules report it
	}
	common := ctx.GetCommonTlsContext()
	if !slices.ContainsFunc(common.GetTlsCertificateSdsSecretConfigs(), func(c *tlsv3.SdsSecretConfig) bool { return c.GetSdsConfig() != nil }) {
		return nil // mesh mTLS (a sidecar's inbound TCP listener: the proxy's own identity)
	}
	match := chain.GetFilterChainMatch()
	switch {
	case match.GetTransportProtocol() != "tls":
		return []Violation{{Path: "filter_chain_match.transport_protocol", Reason: `"tls" required for a tcp_proxy chain terminating TLS with certificates received over SDS`}}
	case len(match.GetApplicationProtocols()) > 0:
		return []Violation{{Path: "filter_chain_match.application_protocols", Reason: "not supported on a tcp_proxy chain terminating TLS"}}
	case len(common.GetAlpnProtocols()) > 0:
		return []Violation{{Path: "transport_socket.typed_config.common_tls_context.alpn_protocols", Reason: "not supported on a tcp_proxy chain terminating TLS (the bytes are the backend's, whatever their protocol)"}}
	case ctx.GetRequireClientCertificate().GetValue() || common.GetValidationContextType() != nil:
		return []Violation{{Path: "transport_socket.typed_config", Reason: "client certificates are not supported with certificates received over SDS"}}
	}
	return nil
}

// checkChainKinds refuses a listener mixing HTTP connection managers and
// tcp_proxies in its filter chains.
func checkChainKinds(m protoreflect.Message) []Violation {
	chains := m.Get(m.Descriptor().Fields().ByName("filter_chains")).List()
	var first protoreflect.FullName
	for i := range chains.Len() {
		chain := chains.Get(i).Message()
		filters := chain.Get(chain.Descriptor().Fields().ByName("filters")).List()
		if filters.Len() == 0 {
			continue
		}
		kind := typedConfigName(filters.Get(filters.Len() - 1).Message())
		if i == 0 {
			first = kind
			continue
		}
		if kind != first {
			return []Violation{{Path: "filter_chains[" + strconv.Itoa(i) + "].filters",
				Reason: "every filter chain of a listener must carry the same kind of filter (" + string(first) + ")"}}
		}
	}
	return nil
}
