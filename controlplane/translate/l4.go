package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/api/xdsnode"
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
// chain that matches: every connection is closed. A route attached through
// a TLS listener in mode Terminate has its chain terminate TLS with the
// listener's certificates (SDS secrets, returned) before its tcp_proxy.
func l4Listener(m *model.Model, clusters *clusterCollector, name string, gw *model.Gateway, port *model.GatewayPort) (*listenerv3.Listener, []*tlsv3.Secret, error) {
	l := &listenerv3.Listener{Name: name, Address: socketAddress(gw.Address, uint32(port.Number))}
	var logs []*accesslogv3.AccessLog
	if a := m.Mesh.AccessLog; a != nil {
		entry, err := hcmAccessLog(a, gw.Namespace+"/"+gw.Name, TracingRoleGateway)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: access log: %w", name, err)
		}
		logs = []*accesslogv3.AccessLog{entry}
	}
	tls := port.L4.Protocol == model.ProtocolTLSPassthrough
	if tls {
		inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: tls_inspector: %w", name, err)
		}
		l.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       tlsInspectorName,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}}
	}
	var fallback *listenerv3.FilterChain
	var secrets []*tlsv3.Secret
	seen := map[string]bool{}
	for _, r := range port.L4.Routes {
		filter, err := tcpProxyFilter(m, clusters, name+"/"+r.Route.String(), r.Backends, logs)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: %w", name, err)
		}
		var socket *corev3.TransportSocket
		chainName := r.Route.String()
		if r.Terminate != nil {
			if socket, err = terminateL4TLS(r.Terminate); err != nil {
				return nil, nil, fmt.Errorf("listener %q: %s: %w", name, r.Terminate.Listener, err)
			}
			chainName = r.Terminate.Listener + "/" + chainName
			for _, cert := range r.Terminate.Certificates {
				if !seen[cert.Secret] {
					seen[cert.Secret] = true
					secrets = append(secrets, listenerCertificateSecret(cert))
				}
			}
		}
		if len(r.ServerNames) > 0 {
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             chainName,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: r.ServerNames, TransportProtocol: "tls"},
				Filters:          []*listenerv3.Filter{filter},
				TransportSocket:  socket,
			})
		}
		if r.Default && fallback == nil {
			fallback = &listenerv3.FilterChain{Name: chainName, Filters: []*listenerv3.Filter{filter}, TransportSocket: proto.CloneOf(socket)}
			if tls {
				// TLS listeners take TLS only: anything else matches no chain.
				fallback.FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
			}
		}
	}
	if fallback != nil {
		l.FilterChains = append(l.FilterChains, fallback)
	}
	if len(l.FilterChains) == 0 {
		// No route: every connection is closed (a listener has a chain).
		filter, err := tcpProxyFilter(m, clusters, name, nil, logs)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: %w", name, err)
		}
		l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}}
	}
	for _, addr := range gw.AdditionalAddresses {
		l.AdditionalAddresses = append(l.AdditionalAddresses,
			&listenerv3.AdditionalAddress{Address: socketAddress(addr, uint32(port.Number))})
	}
	slices.SortFunc(secrets, func(a, b *tlsv3.Secret) int { return strings.Compare(a.Name, b.Name) })
	return l, secrets, nil
}

// terminateL4TLS is the transport socket of a chain terminating TLS before
// a tcp_proxy: an HTTPS listener's (certificates over SDS, TLS versions,
// cipher suites), without ALPN (the bytes are the backend's, whatever
// their protocol).
func terminateL4TLS(c *model.TLSChain) (*corev3.TransportSocket, error) {
	plain := *c
	plain.ApplicationProtocols = nil
	ctx, err := downstreamTLSContext(&plain)
	if err != nil {
		return nil, err
	}
	ctx.CommonTlsContext.AlpnProtocols = nil
	return transportSocket(ctx)
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

// Names of a sidecar's L4 listeners and filters.
const (
	// OutboundTCPPrefix starts the name of a sidecar's outbound TCP
	// listener: "outbound-tcp/<namespace>/<service>:<port>".
	OutboundTCPPrefix   = "outbound-tcp/"
	networkRBACName     = "envoy.filters.network.rbac"
	networkRBACDenyStat = "meshgate.rbac.deny"
)

// inboundTCP builds the inbound listener of a sidecar of a TCP service:
// mTLS by the service's mode (when the mesh has a CA), its authorization as
// network RBAC filters (deny, then allow: a denied connection is closed),
// then a tcp_proxy to the local app's STATIC cluster.
func inboundTCP(m *model.Model, in Inputs, node NodeInfo, svc *model.Service) (*listenerv3.Listener, *clusterv3.Cluster, error) {
	inHost, inPort, err := splitAddress(xdsnode.KeyInboundAddress, node.InboundAddress)
	if err != nil {
		return nil, nil, err
	}
	appHost, appPort, err := splitAddress(xdsnode.KeyAppAddress, node.AppAddress)
	if err != nil {
		return nil, nil, err
	}
	clusterName := "inbound|" + node.Service
	c := &clusterv3.Cluster{
		Name:                 clusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: clusterName,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{localityEndpoints(nil, lbEndpoint(appHost, appPort, nil, false))},
		},
	}
	logs, err := sidecarAccessLogs(m, node)
	if err != nil {
		return nil, nil, fmt.Errorf("listener %q: %w", InboundName, err)
	}
	proxy, err := tcpProxyFilter(m, newClusterCollector(nil), InboundName, []*model.Backend{{Cluster: clusterName, Weight: 1}}, logs)
	if err != nil {
		return nil, nil, fmt.Errorf("listener %q: %w", InboundName, err)
	}
	filters, err := networkRBACFilters(svc.Authorization)
	if err != nil {
		return nil, nil, fmt.Errorf("listener %q: %w", InboundName, err)
	}
	l := &listenerv3.Listener{
		Name:             InboundName,
		Address:          socketAddress(inHost, inPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: append(filters, proxy)}},
	}
	if in.mtls() {
		if err := secureInbound(l, svc.MTLSMode); err != nil {
			return nil, nil, err
		}
	}
	return l, c, nil
}

// networkRBACFilters are the network RBAC filters enforcing a on
// connections (policy allows only rules on who calls for a TCP service):
// the deny filter, then the allow filter; none without authorization.
func networkRBACFilters(a *model.Authorization) ([]*listenerv3.Filter, error) {
	deny, allow := rbacConfigs(a)
	var out []*listenerv3.Filter
	for _, cfg := range []*rbacfilterv3.RBAC{deny, allow} {
		if cfg == nil {
			continue
		}
		typed, err := anypb.New(&netrbacv3.RBAC{Rules: cfg.GetRules(), StatPrefix: cmp.Or(cfg.GetRulesStatPrefix(), networkRBACDenyStat)})
		if err != nil {
			return nil, fmt.Errorf("network rbac: %w", err)
		}
		out = append(out, &listenerv3.Filter{Name: networkRBACName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed}})
	}
	return out, nil
}

// sidecarAccessLogs is the access log of a sidecar's tcp_proxies, none
// when the mesh does not log.
func sidecarAccessLogs(m *model.Model, node NodeInfo) ([]*accesslogv3.AccessLog, error) {
	a := m.Mesh.AccessLog
	if a == nil {
		return nil, nil
	}
	entry, err := hcmAccessLog(a, node.Namespace+"/"+node.Service, TracingRoleSidecar)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return []*accesslogv3.AccessLog{entry}, nil
}

// outboundTCP builds a sidecar's outbound TCP listeners (the node's
// KeyOutboundTCP): each a tcp_proxy to the cluster of its TCP service port,
// mTLS to the endpoints that are sidecars. One whose service or port does
// not exist, is not TCP, or that the caller may not call (the mesh's
// outbound scope) proxies to invalidBackendCluster: its connections are
// closed. It returns the listeners and the clusters they use.
func outboundTCP(p parts, node NodeInfo) ([]*listenerv3.Listener, *clusterSet, error) {
	m, _ := p.translation()
	entries, err := xdsnode.ParseOutboundTCPList(node.OutboundTCP)
	if err != nil {
		return nil, nil, fmt.Errorf("node metadata %s: %w", xdsnode.KeyOutboundTCP, err)
	}
	logs, err := sidecarAccessLogs(m, node)
	if err != nil {
		return nil, nil, err
	}
	caller := model.NamespacedName{Namespace: node.Namespace, Name: node.Service}
	clusters := newClusterCollector(p)
	var out []*listenerv3.Listener
	for _, e := range entries {
		ns := cmp.Or(e.Namespace, node.Namespace)
		name := OutboundTCPPrefix + ns + "/" + e.Service + ":" + strconv.Itoa(int(e.Port))
		backend := &model.Backend{Weight: 1}
		if svc := m.Service(ns, e.Service); svc != nil && svc.IsTCP() && m.MayCall(caller, svc) {
			if port := svc.Port(e.Port); port != nil {
				backend.Service, backend.Port, backend.Cluster = svc.NamespacedName, port.Number, port.Cluster
			}
		}
		filter, err := tcpProxyFilter(m, clusters, name, []*model.Backend{backend}, logs)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %q: %w", name, err)
		}
		host, port, err := splitAddress(xdsnode.KeyOutboundTCP, e.Address)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, &listenerv3.Listener{
			Name:             name,
			Address:          socketAddress(host, port),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}},
		})
	}
	if clusters.err != nil {
		return nil, nil, clusters.err
	}
	return out, clusters.set(), nil
}
