package translate

import (
	"fmt"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Names of the L4 filters.
const (
	tcpProxyName = "envoy.filters.network.tcp_proxy"
)

// tcpIdleTimeout closes a proxied TCP connection idle (no byte either way)
// that long: Envoy's default for tcp_proxy.
const tcpIdleTimeout = time.Hour

// l4Listener builds the listener of a gateway port of TCP or TLS
// (Passthrough) listeners: a tcp_proxy per route (for TLS, one filter
// chain per route, chosen by the SNI the tls_inspector reads; no
// termination), adding the routes' clusters to clusters. A route whose
// backends all fail to resolve proxies to invalidBackendCluster: no
// cluster has that name, so its connections are closed, as the Gateway
// API wants for an invalid backend. A port without routes has no filter
// chain that matches: every connection is closed.
func l4Listener(m *model.Model, clusters *clusterCollector, name string, gw *model.Gateway, port *model.GatewayPort) (*listenerv3.Listener, error) {
	l := &listenerv3.Listener{Name: name, Address: socketAddress(gw.Address, uint32(port.Number))}
	var logs []*accesslogv3.AccessLog
	if a := m.Mesh.AccessLog; a != nil {
		entry, err := hcmAccessLog(a, gw.Namespace+"/"+gw.Name, TracingRoleGateway)
		if err != nil {
			return nil, fmt.Errorf("listener %q: access log: %w", name, err)
		}
		logs = []*accesslogv3.AccessLog{entry}
	}
	tls := port.L4.Protocol == model.ProtocolTLSPassthrough
	if tls {
		inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
		if err != nil {
			return nil, fmt.Errorf("listener %q: tls_inspector: %w", name, err)
		}
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       tlsInspectorName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}}
	}
	var fallback *listenerv3.FilterChain
	for _, r := range port.L4.Routes {
		filter, err := tcpProxyFilter(m, clusters, name+"/"+r.Route.String(), r.Backends, logs)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if len(r.ServerNames) > 0 {
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             r.Route.String(),
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: r.ServerNames, TransportProtocol: "tls"},
				Filters:          []*listenerv3.Filter{filter},
			})
		}
		if r.Default && fallback == nil {
			fallback = &listenerv3.FilterChain{Name: r.Route.String(), Filters: []*listenerv3.Filter{filter}}
			if tls {
				// Passthrough takes TLS only: anything else matches no chain.
				fallback.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
			}
		}
	}
	if fallback != nil {
		l.FilterChains = append(l.FilterChains, fallback)
	}
	for _, addr := range gw.AdditionalAddresses {
		l.AdditionalAddresses = append(l.AdditionalAddresses,
			&listenerv3.AdditionalAddress{Address: socketAddress(addr, uint32(port.Number))})
	}
	return l, nil
}

// tcpProxyFilter is the tcp_proxy of a route to backends: one cluster, or
// weighted_clusters; the share of the backends that do not resolve goes
// to invalidBackendCluster (closed).
func tcpProxyFilter(m *model.Model, clusters *clusterCollector, statPrefix string, backends []*model.Backend, logs []*accesslogv3.AccessLog) (*listenerv3.Filter, error) {
	var weighted []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	var invalid uint32
	for _, b := range backends {
		if b.Weight <= 0 {
			continue
		}
		if b.Cluster == "" {
			invalid += uint32(b.Weight)
			continue
		}
		weighted = append(weighted, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: b.Cluster, Weight: uint32(b.Weight)})
		if svc := m.Service(b.Service.Namespace, b.Service.Name); svc != nil {
			if port := svc.Port(b.Port); port != nil {
				clusters.add(svc, port)
			}
		}
	}
	if invalid > 0 || len(weighted) == 0 {
		weighted = append([]*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: invalidBackendCluster, Weight: max(invalid, 1)}}, weighted...)
	}
	tp := &tcpproxyv3.TcpProxy{
		StatPrefix:  statPrefix,
		IdleTimeout: durationpb.New(tcpIdleTimeout),
		AccessLog:   logs,
	}
	if len(weighted) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: weighted[0].Name}
	} else {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: weighted}}
	}
	cfg, err := anypb.New(tp)
	if err != nil {
		return nil, fmt.Errorf("tcp_proxy: %w", err)
	}
	return &listenerv3.Filter{Name: tcpProxyName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}, nil
}
