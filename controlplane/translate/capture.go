package translate

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
)

// Names of a transparent sidecar's capture listener, its route
// configuration and its passthrough cluster.
const (
	CaptureName = "capture"
	// captureRoutePrefix starts the name of a capture chain's route
	// configuration (CaptureRouteName).
	captureRoutePrefix = CaptureName + "|"
	// PassthroughCluster is the ORIGINAL_DST cluster a captured connection
	// to no mesh service goes to (capture_unknown "passthrough").
	PassthroughCluster = "passthrough"
	originalDstName    = "envoy.filters.listener.original_dst"
	httpInspectorName  = "envoy.filters.listener.http_inspector"
	// captureFiltersTimeout bounds the wait for the first bytes the
	// inspectors read on a connection to an HTTP service port; the
	// connection then goes on as TCP (the default chain).
	captureFiltersTimeout = 5 * time.Second
)

// CaptureRouteName is the route configuration of the capture listener's
// chain for a service port, chain being "<namespace>/<name>:<port>":
// "capture|<namespace>/<name>:<port>", one virtual host (domains "*")
// with the routes the outbound listener has for that service port.
func CaptureRouteName(chain string) string { return captureRoutePrefix + chain }

// captureHTTPProtocols are the application protocols the http_inspector
// reports for HTTP: an HTTP service port's chain takes those.
var captureHTTPProtocols = []string{"http/1.1", "http/1.0", "h2c"}

// capture builds the capture listener of a transparent sidecar (node
// metadata capture_address), its route configurations (one per HTTP
// chain) and the clusters it adds: the listener reads each connection's original destination
// (original_dst) and chooses its filter chain by it, a chain per service
// port the caller may call, matched by the service's address and its
// endpoints' addresses (prefix_ranges) and the port (destination_port):
// HTTP (the http_inspector says so) goes to an HttpConnectionManager with
// the outbound listener's filters on the chain's own route configuration
// (CaptureRouteName): the service port's outbound virtual host answering
// for any Host, so a captured request is routed by the service it was
// sent to, never by its Host header; a TCP service port to a tcp_proxy to its cluster (mTLS to
// sidecars). Anything else takes the default filter chain: passthrough to
// the original destination (ORIGINAL_DST cluster) or, with capture_unknown
// "deny", closed.
func capture(p parts, node NodeInfo, outbound *listenerv3.Listener, out *outboundPart) (*listenerv3.Listener, []*routev3.RouteConfiguration, *ownCluster, *clusterSet, error) {
	m, _ := p.translation()
	host, port, err := splitAddress(xdsnode.KeyCaptureAddress, node.CaptureAddress)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var filters []*listenerv3.ListenerFilter
	for _, f := range []struct {
		name string
		cfg  proto.Message
	}{{originalDstName, &originaldstv3.OriginalDst{}}, {tlsInspectorName, &tlsinspectorv3.TlsInspector{}}, {httpInspectorName, &httpinspectorv3.HttpInspector{}}} {
		typed, err := anypb.New(f.cfg)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("listener %q: %s: %w", CaptureName, f.name, err)
		}
		filters = append(filters, &listenerv3.ListenerFilter{Name: f.name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: typed}})
	}
	l := &listenerv3.Listener{
		Name:                             CaptureName,
		Address:                          socketAddress(host, port),
		TrafficDirection:                 corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:                  filters,
		ListenerFiltersTimeout:           durationpb.New(captureFiltersTimeout),
		ContinueOnListenerFiltersTimeout: true,
	}
	// The outbound listener's HttpConnectionManager: each HTTP chain gets
	// a copy on its own route configuration (CaptureRouteName).
	hcm := &hcmv3.HttpConnectionManager{}
	if err := outbound.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("listener %q: %w", CaptureName, err)
	}
	hcm.StatPrefix = CaptureName
	httpFilter := func(routeName string) (*listenerv3.Filter, error) {
		chainHCM := proto.CloneOf(hcm)
		chainHCM.GetRds().RouteConfigName = routeName
		typed, err := anypb.New(chainHCM)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", CaptureName, err)
		}
		return &listenerv3.Filter{Name: httpConnectionManagerName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed}}, nil
	}
	vhosts := map[string]*routev3.VirtualHost{}
	for _, vh := range out.routes.GetVirtualHosts() {
		vhosts[vh.GetName()] = vh
	}
	var rcs []*routev3.RouteConfiguration
	logs, err := sidecarAccessLogs(m, node)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	caller := model.NamespacedName{Namespace: node.Namespace, Name: node.Service}
	clusters := newClusterCollector(p)
	taken := map[netip.AddrPort]bool{} // an address and port one chain matches
	for _, svc := range m.Services {
		if !m.MayCall(caller, svc) {
			continue
		}
		for _, sp := range svc.Ports {
			ranges := captureAddresses(m, svc, sp, taken)
			if len(ranges) == 0 {
				continue
			}
			name := svc.Namespace + "/" + svc.Name + ":" + strconv.Itoa(int(sp.Number))
			match := &listenerv3.FilterChainMatch{PrefixRanges: ranges, DestinationPort: wrapperspb.UInt32(uint32(sp.Number))}
			if svc.IsTCP() {
				filter, err := tcpProxyFilter(m, clusters, CaptureName+"/"+name, []*model.Backend{{Service: svc.NamespacedName, Port: sp.Number, Cluster: sp.Cluster, Weight: 1}}, logs)
				if err != nil {
					return nil, nil, nil, nil, fmt.Errorf("listener %q: %w", CaptureName, err)
				}
				l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: name, FilterChainMatch: match, Filters: []*listenerv3.Filter{filter}})
				continue
			}
			vh := vhosts[name]
			if vh == nil {
				continue
			}
			// The chain's one virtual host answers for any Host: the
			// service called is the one the connection was sent to.
			rc := proto.CloneOf(out.routes)
			rc.Name = CaptureRouteName(name)
			chainVH := proto.CloneOf(vh)
			chainVH.Domains = []string{"*"}
			rc.VirtualHosts = []*routev3.VirtualHost{chainVH}
			filter, err := httpFilter(rc.Name)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			rcs = append(rcs, rc)
			match.TransportProtocol = "raw_buffer"
			match.ApplicationProtocols = captureHTTPProtocols
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: name, FilterChainMatch: match, Filters: []*listenerv3.Filter{filter}})
		}
	}
	if clusters.err != nil {
		return nil, nil, nil, nil, clusters.err
	}
	backend := &model.Backend{Weight: 1} // deny: no cluster, closed
	var own *ownCluster
	if node.CaptureUnknown != xdsnode.CaptureDeny {
		backend.Cluster = PassthroughCluster
		own = &ownCluster{cluster: &clusterv3.Cluster{
			Name:                 PassthroughCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			ConnectTimeout:       durationpb.New(connectTimeout),
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		}}
	}
	def, err := tcpProxyFilter(m, newClusterCollector(nil), CaptureName+"/"+PassthroughCluster, []*model.Backend{backend}, logs)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("listener %q: %w", CaptureName, err)
	}
	chain := &listenerv3.FilterChain{Name: PassthroughCluster, Filters: []*listenerv3.Filter{def}}
	if len(l.FilterChains) == 0 {
		// No service to match: the one chain takes every connection.
		l.FilterChains = []*listenerv3.FilterChain{chain}
	} else {
		l.DefaultFilterChain = chain
	}
	return l, rcs, own, clusters.set(), nil
}

// captureAddresses are the prefix ranges a captured connection to port sp
// of svc is recognized by: its VIP, then its endpoints' IP addresses, each
// address and port taken by the first service port that has it.
func captureAddresses(m *model.Model, svc *model.Service, sp *model.ServicePort, taken map[netip.AddrPort]bool) []*corev3.CidrRange {
	var addrs []netip.Addr
	addrs = append(addrs, serviceAddresses(svc)...)
	for _, ep := range m.Endpoints(sp) {
		if a, err := netip.ParseAddr(ep.Host); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	var ranges []*corev3.CidrRange
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		key := netip.AddrPortFrom(a, uint16(sp.Number))
		if seen[a] || taken[key] {
			continue
		}
		seen[a], taken[key] = true, true
		ranges = append(ranges, &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))})
	}
	return ranges
}

// serviceAddresses are the virtual addresses of svc a captured connection
// may be sent to: its VIP, when it has one.
func serviceAddresses(svc *model.Service) []netip.Addr {
	if svc.VIP.IsValid() {
		return []netip.Addr{svc.VIP.Unmap()}
	}
	return nil
}
