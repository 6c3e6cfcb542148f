// Package translate turns the compiled model into the Envoy v3 resources one
// proxy node receives, following the wire contract in docs/xds.md exactly: it
// emits only the fields the meshgate proxy implements, and every resource
// passes its proto's Validate().
package translate

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
)

// Names of the sidecar's listeners and route configurations.
const (
	InboundName  = "inbound"
	OutboundName = "outbound"
)

// Filter and extension names.
const (
	httpConnectionManagerName = "envoy.filters.network.http_connection_manager"
	routerFilterName          = "envoy.filters.http.router"
	httpProtocolOptionsName   = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	endpointMetadataKey       = "meshgate"
)

// Fixed connection manager and cluster settings.
const (
	requestHeadersTimeout = 10 * time.Second
	connectionIdleTimeout = 5 * time.Minute
	maxRequestHeadersKB   = 60
	connectTimeout        = 5 * time.Second
)

// Resources is everything one node receives, each slice sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets served over SDS: the ROOTCA trust bundle when the mesh has a CA.
	Secrets []*tlsv3.Secret
}

// Messages returns every resource, listeners first.
func (r *Resources) Messages() []proto.Message {
	out := make([]proto.Message, 0, len(r.Listeners)+len(r.Routes)+len(r.Clusters)+len(r.Endpoints)+len(r.Secrets))
	for _, l := range r.Listeners {
		out = append(out, l)
	}
	for _, rc := range r.Routes {
		out = append(out, rc)
	}
	for _, c := range r.Clusters {
		out = append(out, c)
	}
	for _, e := range r.Endpoints {
		out = append(out, e)
	}
	for _, sec := range r.Secrets {
		out = append(out, sec)
	}
	return out
}

// Translate builds the resources for one node of a mesh without a CA:
// TranslateWith with empty Inputs.
func Translate(m *model.Model, node NodeInfo) (*Resources, error) {
	return TranslateWith(m, node, Inputs{})
}

// TranslateWith builds the resources for one node. A node with an unknown
// role gets empty Resources and no error, and so does a gateway node whose
// Gateway does not exist, except for the ROOTCA secret; malformed node
// metadata is an error. With a trust bundle in in, every gateway and sidecar
// node gets the ROOTCA secret, sidecar inbound listeners require mTLS (by the
// service's mode) and clusters use mTLS to endpoints that are sidecars.
func TranslateWith(m *model.Model, node NodeInfo, in Inputs) (*Resources, error) {
	return translateNode(newTranslator(m, in, nil), node)
}

// translateNode runs t for one node; see TranslateWith.
func translateNode(t *translator, node NodeInfo) (*Resources, error) {
	res := &Resources{}
	var err error
	switch node.Role {
	case RoleGateway:
		err = t.gateway(res, node)
	case RoleSidecar:
		err = t.sidecar(res, node)
	}
	if err != nil {
		return nil, err
	}
	if t.err != nil {
		return nil, t.err
	}
	if len(t.inputs.TrustBundle) > 0 && (node.Role == RoleGateway || node.Role == RoleSidecar) {
		res.Secrets = []*tlsv3.Secret{t.rootCASecret()}
	}
	res.Clusters, res.Endpoints = t.sortedClusters()
	slices.SortFunc(res.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	return res, nil
}

type translator struct {
	model     *model.Model
	inputs    Inputs
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
	// sets are shared clusters added whole, besides clusters (see
	// sortedClusters).
	sets []*clusterSet
	// shared, when set, memoizes the node-independent parts across nodes.
	shared *Shared
	// err is the first error of a helper that cannot return one.
	err error
}

func newTranslator(m *model.Model, in Inputs, shared *Shared) *translator {
	return &translator{model: m, inputs: in, shared: shared,
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
}

// rootCASecret is the ROOTCA secret of the trust bundle, shared across nodes
// when t is.
func (t *translator) rootCASecret() *tlsv3.Secret {
	if t.shared != nil {
		return t.shared.rootCA
	}
	return rootCASecret(t.inputs.TrustBundle)
}

// mtls reports whether the mesh has a CA, so that hops between proxies use
// mTLS.
func (t *translator) mtls() bool { return len(t.inputs.TrustBundle) > 0 }

// fail records the first error of a translation.
func (t *translator) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *translator) gateway(res *Resources, node NodeInfo) error {
	if t.shared != nil {
		return t.shared.gateway(t, res, node)
	}
	return t.buildGateway(res, node)
}

// buildGateway translates the node's Gateway into res and t's clusters.
func (t *translator) buildGateway(res *Resources, node NodeInfo) error {
	gw := t.model.Gateway(node.Namespace, node.Gateway)
	if gw == nil {
		return nil
	}
	for _, port := range gw.Ports {
		name := gw.Namespace + "/" + gw.Name + "/" + strconv.Itoa(int(port.Number))
		var rbac []*hcmv3.HttpFilter
		if gw.Authorization != nil || hasRouteAuthorization(port) {
			var err error
			if rbac, err = rbacHTTPFilters(gw.Authorization); err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
		}
		l, err := listener(name, gw.Address, uint32(port.Number), corev3.TrafficDirection_UNSPECIFIED, true, rbac)
		if err != nil {
			return err
		}
		rc := &routev3.RouteConfiguration{Name: name}
		for _, vh := range port.VirtualHosts {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    name + "/" + vh.Hostname,
				Domains: []string{vh.Hostname},
				Routes:  t.routes(vh.Rules, port.Number, gw.Authorization),
			})
		}
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, rc)
	}
	return nil
}

func (t *translator) sidecar(res *Resources, node NodeInfo) error {
	if node.InboundAddress != "" && node.AppAddress != "" {
		if err := t.inbound(res, node); err != nil {
			return err
		}
	}
	outHost, outPort, err := splitAddress(xdsnode.KeyOutboundAddress, cmp.Or(node.OutboundAddress, DefaultOutboundAddress))
	if err != nil {
		return err
	}
	var rbac []*hcmv3.HttpFilter
	if t.outboundHasAuthorization() {
		if rbac, err = rbacHTTPFilters(nil); err != nil {
			return fmt.Errorf("listener %q: %w", OutboundName, err)
		}
	}
	l, err := listener(OutboundName, outHost, outPort, corev3.TrafficDirection_OUTBOUND, false, rbac)
	if err != nil {
		return err
	}
	rc := t.outboundRoutes(model.NamespacedName{Namespace: node.Namespace, Name: node.Service})
	res.Listeners = append(res.Listeners, l)
	res.Routes = append(res.Routes, rc)
	return nil
}

// outboundRoutes is the outbound route configuration of a sidecar of the
// service caller (it depends on nothing else of the node), with its clusters
// added to t; shared across nodes when t is. It holds the services the
// caller may call (model.Model.MayCall): with the mesh's default scope,
// every service.
func (t *translator) outboundRoutes(caller model.NamespacedName) *routev3.RouteConfiguration {
	if t.shared != nil {
		return t.shared.outbound(t, caller)
	}
	return t.buildOutboundRoutes(caller.Namespace, func(svc *model.Service) bool { return t.model.MayCall(caller, svc) })
}

// buildOutboundRoutes builds the outbound route configuration of a sidecar
// in namespace callerNamespace that may call the services mayCall accepts.
func (t *translator) buildOutboundRoutes(callerNamespace string, mayCall func(*model.Service) bool) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: OutboundName}
	for _, svc := range t.model.Services {
		if !mayCall(svc) {
			continue
		}
		for _, port := range svc.Ports {
			var routes []*routev3.Route
			if len(port.Routes) > 0 {
				routes = t.routes(port.Routes, port.Number, nil)
			} else {
				t.addCluster(svc, port)
				routes = []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: port.Cluster}}},
				}}
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    svc.Namespace + "/" + svc.Name + ":" + strconv.Itoa(int(port.Number)),
				Domains: serviceDomains(svc, port, callerNamespace),
				Routes:  routes,
			})
		}
	}
	return rc
}

// serviceDomains are the hosts by which a port of a service is called:
// name.namespace:port, and name.namespace for the service's default port; the
// bare name (and name:port) only for services in the caller's namespace, so
// that two namespaces' services of the same name do not claim the same domain.
// The outbound listener keeps the port of the Host header for this.
func serviceDomains(svc *model.Service, port *model.ServicePort, callerNamespace string) []string {
	var domains []string
	bases := []string{svc.Name + "." + svc.Namespace}
	if svc.Namespace == callerNamespace {
		bases = []string{svc.Name, svc.Name + "." + svc.Namespace}
	}
	for _, base := range bases {
		if port == svc.DefaultPort() {
			domains = append(domains, base)
		}
		domains = append(domains, base+":"+strconv.Itoa(int(port.Number)))
	}
	return domains
}

func (t *translator) inbound(res *Resources, node NodeInfo) error {
	inHost, inPort, err := splitAddress(xdsnode.KeyInboundAddress, node.InboundAddress)
	if err != nil {
		return err
	}
	appHost, appPort, err := splitAddress(xdsnode.KeyAppAddress, node.AppAddress)
	if err != nil {
		return err
	}
	svc := t.model.Service(node.Namespace, node.Service)
	var rbac []*hcmv3.HttpFilter
	if svc != nil && svc.Authorization != nil {
		if rbac, err = rbacHTTPFilters(svc.Authorization); err != nil {
			return fmt.Errorf("listener %q: %w", InboundName, err)
		}
	}
	l, err := listener(InboundName, inHost, inPort, corev3.TrafficDirection_INBOUND, false, rbac)
	if err != nil {
		return err
	}
	if t.mtls() {
		mode := t.model.Mesh.MTLSMode
		if svc != nil {
			mode = svc.MTLSMode
		}
		if err := secureInbound(l, mode); err != nil {
			return err
		}
	}
	clusterName := "inbound|" + node.Service
	c := &clusterv3.Cluster{
		Name:                 clusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: clusterName,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(appHost, appPort, nil, false)}}},
		},
	}
	if svc != nil && svc.Ports[0].Protocol == model.ProtocolHTTP2 {
		if err := setHTTP2(c); err != nil {
			return err
		}
	}
	t.clusters[clusterName] = c
	res.Listeners = append(res.Listeners, l)
	res.Routes = append(res.Routes, &routev3.RouteConfiguration{
		Name: InboundName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    InboundName,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName}}},
			}},
		}},
	})
	return nil
}

func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// listener builds a listener whose HTTP connection manager takes its routes,
// named like the listener, over RDS, and runs the given filters (the RBAC
// filters, or none) before the router.
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
	}
	// Routing ignores the port of the Host header, except on a sidecar's
	// outbound listener, where it selects the port of the called service.
	if direction != corev3.TrafficDirection_OUTBOUND {
		hcm.StripPortMode = &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}
	}
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

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// addClusterSet adds a set of shared clusters and their load assignments.
func (t *translator) addClusterSet(set *clusterSet) {
	if set.err != nil {
		t.fail(set.err)
	}
	t.sets = append(t.sets, set)
}

// sortedClusters returns the node's clusters and load assignments in name
// order: those of t.clusters and t.endpoints, and those of t.sets (which
// replace a cluster of the same name). One set and a few clusters of the
// node's own (a sidecar's inbound) are merged without a map.
func (t *translator) sortedClusters() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	own := slices.Sorted(maps.Keys(t.clusters))
	if len(t.sets) == 1 && !slices.ContainsFunc(own, func(name string) bool {
		_, found := slices.BinarySearch(t.sets[0].names, name)
		return found
	}) {
		set := t.sets[0]
		if len(own)+len(set.names) == 0 {
			return nil, nil
		}
		clusters := make([]*clusterv3.Cluster, 0, len(own)+len(set.names))
		endpoints := make([]*endpointv3.ClusterLoadAssignment, 0, len(own)+len(set.names))
		i := 0
		addOwn := func(name string) {
			clusters = append(clusters, t.clusters[name])
			if cla, ok := t.endpoints[name]; ok {
				endpoints = append(endpoints, cla)
			}
		}
		for j, name := range set.names {
			for ; i < len(own) && own[i] < name; i++ {
				addOwn(own[i])
			}
			clusters = append(clusters, set.clusters[j])
			endpoints = append(endpoints, set.endpoints[j])
		}
		for ; i < len(own); i++ {
			addOwn(own[i])
		}
		return clusters, endpoints
	}
	for _, set := range t.sets {
		for j, name := range set.names {
			t.clusters[name], t.endpoints[name] = set.clusters[j], set.endpoints[j]
		}
	}
	var clusters []*clusterv3.Cluster
	var endpoints []*endpointv3.ClusterLoadAssignment
	for _, name := range slices.Sorted(maps.Keys(t.clusters)) {
		clusters = append(clusters, t.clusters[name])
		if cla, ok := t.endpoints[name]; ok {
			endpoints = append(endpoints, cla)
		}
	}
	return clusters, endpoints
}

// addCluster records the EDS cluster of a service port and its endpoints.
func (t *translator) addCluster(svc *model.Service, port *model.ServicePort) {
	if _, ok := t.clusters[port.Cluster]; ok {
		return
	}
	var c *clusterv3.Cluster
	var cla *endpointv3.ClusterLoadAssignment
	var err error
	if t.shared != nil {
		c, cla, err = t.shared.cluster(svc, port)
	} else {
		c, cla, err = buildCluster(t.model, t.mtls(), svc, port)
	}
	if err != nil {
		t.fail(err)
	}
	t.clusters[port.Cluster] = c
	t.endpoints[port.Cluster] = cla
}

// buildCluster builds the EDS cluster of a service port and its endpoints;
// mtls: the mesh has a CA. The first error is returned with the cluster
// (as the translation fails anyway).
func buildCluster(m *model.Model, mtlsOn bool, svc *model.Service, port *model.ServicePort) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	c := &clusterv3.Cluster{
		Name:                 port.Cluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource()},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if port.Protocol == model.ProtocolHTTP2 {
		if err := setHTTP2(c); err != nil {
			fail(err)
		}
	}
	mtls := mtlsOn && port.HasSidecarEndpoints()
	if mtls {
		if err := setMTLSMatch(c, m.Mesh.SPIFFEID(svc.Namespace, svc.Name), port.Protocol); err != nil {
			fail(err)
		}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: port.Cluster}
	if len(port.Endpoints) > 0 {
		locality := &endpointv3.LocalityLbEndpoints{}
		for _, ep := range port.Endpoints {
			locality.LbEndpoints = append(locality.LbEndpoints, lbEndpoint(ep.Host, ep.Port, ep.Labels, mtls && ep.Sidecar))
		}
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{locality}
	}
	return c, cla, firstErr
}

func setHTTP2(c *clusterv3.Cluster) error {
	opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("cluster %q: protocol options: %w", c.Name, err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsName: opts}
	return nil
}

// lbEndpoint builds an endpoint with its labels as metadata; sidecar marks it
// for the mtls transport socket match.
func lbEndpoint(host string, port uint32, labels map[string]string, sidecar bool) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(host, port),
	}}}
	metadata := map[string]*structpb.Struct{}
	if len(labels) > 0 {
		fields := make(map[string]*structpb.Value, len(labels))
		for k, v := range labels {
			fields[k] = structpb.NewStringValue(v)
		}
		metadata[endpointMetadataKey] = &structpb.Struct{Fields: fields}
	}
	if sidecar {
		metadata[transportSocketMatchKey] = sidecarEndpointMetadata()
	}
	if len(metadata) > 0 {
		ep.Metadata = &corev3.Metadata{FilterMetadata: metadata}
	}
	return ep
}

// hasRouteAuthorization reports whether a rule of a gateway port has a
// route-level authorization.
func hasRouteAuthorization(port *model.GatewayPort) bool {
	for _, vh := range port.VirtualHosts {
		for _, r := range vh.Rules {
			if r.Authorization != nil {
				return true
			}
		}
	}
	return false
}

// outboundHasAuthorization reports whether a mesh route a sidecar's outbound
// listener serves has a route-level authorization.
func (t *translator) outboundHasAuthorization() bool {
	for _, svc := range t.model.Services {
		for _, port := range svc.Ports {
			for _, r := range port.Routes {
				if r.Authorization != nil {
					return true
				}
			}
		}
	}
	return false
}
