package translate

import (
	"cmp"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
)

// Names of the sidecar's listeners and route configurations.
const (
	InboundName  = "inbound"
	OutboundName = "outbound"
)

// outboundPart is a sidecar's outbound route configuration and the
// clusters it references.
type outboundPart struct {
	routes   *routev3.RouteConfiguration
	clusters *clusterSet
}

// sidecar adds to res what a sidecar receives: its inbound listener, route
// configuration and cluster (to the local app), when the node has inbound
// and app addresses, and its outbound listener and route configuration
// (the services it may call). It returns the node's own clusters and the
// shared ones.
func sidecar(p parts, res *Resources, node NodeInfo) ([]*ownCluster, []*clusterSet, error) {
	m, in := p.translation()
	var own []*ownCluster
	if svc := m.Service(node.Namespace, node.Service); svc != nil && svc.IsTCP() && node.InboundAddress != "" && node.AppAddress != "" {
		l, c, err := inboundTCP(m, in, node, svc)
		if err != nil {
			return nil, nil, err
		}
		res.Listeners = append(res.Listeners, l)
		own = append(own, &ownCluster{cluster: c})
	} else if node.InboundAddress != "" && node.AppAddress != "" {
		l, rc, c, err := inbound(m, in, node)
		if err != nil {
			return nil, nil, err
		}
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, rc)
		own = append(own, &ownCluster{cluster: c})
	}
	outHost, outPort, err := splitAddress(xdsnode.KeyOutboundAddress, cmp.Or(node.OutboundAddress, DefaultOutboundAddress))
	if err != nil {
		return nil, nil, err
	}
	filters, err := httpFilters(OutboundName, outboundFilters(m))
	if err != nil {
		return nil, nil, err
	}
	l, err := listener(OutboundName, outHost, outPort, corev3.TrafficDirection_OUTBOUND, false, filters)
	if err != nil {
		return nil, nil, err
	}
	if err := traceListener(l, m, node.Service, node.Namespace, TracingRoleSidecar); err != nil {
		return nil, nil, err
	}
	if err := logListener(l, m, node.Service, node.Namespace, TracingRoleSidecar); err != nil {
		return nil, nil, err
	}
	out, err := p.outbound(model.NamespacedName{Namespace: node.Namespace, Name: node.Service})
	if err != nil {
		return nil, nil, err
	}
	res.Listeners = append(res.Listeners, l)
	res.Routes = append(res.Routes, out.routes)
	shared := []*clusterSet{out.clusters}
	if node.CaptureAddress != "" {
		cl, rcs, passthrough, clusters, err := capture(p, node, l, out)
		if err != nil {
			return nil, nil, err
		}
		res.Listeners = append(res.Listeners, cl)
		res.Routes = append(res.Routes, rcs...)
		if passthrough != nil {
			own = append(own, passthrough)
		}
		shared = append(shared, clusters)
	}
	if node.OutboundTCP != "" {
		listeners, clusters, err := outboundTCP(p, node)
		if err != nil {
			return nil, nil, err
		}
		res.Listeners = append(res.Listeners, listeners...)
		shared = append(shared, clusters)
	}
	if svc := m.Service(node.Namespace, node.Service); svc != nil && svc.ExtAuth != nil && node.InboundAddress != "" && node.AppAddress != "" {
		// The inbound listener's authorization service.
		authz := newClusterCollector(p)
		addExtAuthCluster(m, authz, svc.ExtAuth)
		if authz.err != nil {
			return nil, nil, authz.err
		}
		shared = append(shared, authz.set())
	}
	return own, shared, nil
}

// buildOutbound builds the outbound route configuration of a sidecar of
// the service caller that may call the services mayCall accepts
// (model.Model.MayCall: with the mesh's default scope, every service): a
// virtual host per service port, with the rules of the HTTPRoutes whose
// parent is the service (the consumer routes of the caller's namespace,
// else the producer routes: model.ServicePort.RoutesFor), their
// authorization resolved for the caller (rulesForCaller), or one route to
// its cluster.
func buildOutbound(p parts, caller model.NamespacedName, mayCall func(*model.Service) bool) (*outboundPart, error) {
	m, _ := p.translation()
	callerNamespace, callerID := caller.Namespace, m.Mesh.SPIFFEID(caller.Namespace, caller.Name)
	clusters := newClusterCollector(p)
	rc := &routev3.RouteConfiguration{Name: OutboundName}
	for _, svc := range m.Services {
		if !mayCall(svc) {
			continue
		}
		if svc.IsTCP() {
			continue // reached through outbound TCP listeners (l4.go)
		}
		for _, port := range svc.Ports {
			var rs []*routev3.Route
			rules := rulesForCaller(port.RoutesFor(callerNamespace), callerID)
			if len(rules) > 0 {
				var err error
				if rs, err = routes(m, clusters, rules, port.Number, nil, nil); err != nil {
					return nil, err
				}
			} else {
				clusters.add(svc, port)
				ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: port.Cluster}}
				t, err := setRouteTraffic(ra, &model.Action{}, port, nil, nil)
				if err != nil {
					return nil, err
				}
				rs = []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: ra},
				}}
				if t != nil {
					if err := setFault(rs[0], t.Fault); err != nil {
						return nil, err
					}
					if err := setBodyLimits(rs[0], t.BodyLimits); err != nil {
						return nil, err
					}
					if err := setRateLimit(m, rs[0], t); err != nil {
						return nil, err
					}
				}
			}
			vhost := &routev3.VirtualHost{
				Name:    svc.Namespace + "/" + svc.Name + ":" + strconv.Itoa(int(port.Number)),
				Domains: serviceDomains(svc, port, callerNamespace),
				Routes:  rs,
			}
			setAttemptCounts(vhost, m, rules, nil, port)
			rc.VirtualHosts = append(rc.VirtualHosts, vhost)
		}
	}
	if clusters.err != nil {
		return nil, clusters.err
	}
	if modelAnyRouteTraffic(m, hasRequestLimit) {
		if err := disableBufferElsewhere(rc); err != nil {
			return nil, err
		}
	}
	if err := disableExtAuthElsewhere(rc, outboundFilters(m), nil); err != nil {
		return nil, err
	}
	return &outboundPart{routes: rc, clusters: clusters.set()}, nil
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

// inbound builds a sidecar's inbound listener (mTLS by its service's mode
// when the mesh has a CA, with its service's authorization), its route
// configuration, and the STATIC cluster of the local app.
func inbound(m *model.Model, in Inputs, node NodeInfo) (*listenerv3.Listener, *routev3.RouteConfiguration, *clusterv3.Cluster, error) {
	inHost, inPort, err := splitAddress(xdsnode.KeyInboundAddress, node.InboundAddress)
	if err != nil {
		return nil, nil, nil, err
	}
	appHost, appPort, err := splitAddress(xdsnode.KeyAppAddress, node.AppAddress)
	if err != nil {
		return nil, nil, nil, err
	}
	svc := m.Service(node.Namespace, node.Service)
	want := listenerFilters{}
	if svc != nil && svc.Authorization != nil {
		want = listenerFilters{rbac: true, authorization: svc.Authorization}
	}
	if svc != nil {
		want.authentication = svc.Authentication
		// Every request of the inbound listener's one route is checked.
		want.addExtAuth(svc.ExtAuth)
	}
	filters, err := httpFilters(InboundName, want)
	if err != nil {
		return nil, nil, nil, err
	}
	l, err := listener(InboundName, inHost, inPort, corev3.TrafficDirection_INBOUND, false, filters)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := traceListener(l, m, node.Service, node.Namespace, TracingRoleSidecar); err != nil {
		return nil, nil, nil, err
	}
	if err := logListener(l, m, node.Service, node.Namespace, TracingRoleSidecar); err != nil {
		return nil, nil, nil, err
	}
	if in.mtls() {
		mode := m.Mesh.MTLSMode
		if svc != nil {
			mode = svc.MTLSMode
		}
		if err := secureInbound(l, mode); err != nil {
			return nil, nil, nil, err
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
			Endpoints:   []*endpointv3.LocalityLbEndpoints{localityEndpoints(nil, lbEndpoint(appHost, appPort, nil, false))},
		},
	}
	if svc != nil && svc.Ports[0].Protocol == model.ProtocolHTTP2 {
		if err := setHTTP2(c); err != nil {
			return nil, nil, nil, err
		}
	}
	rc := &routev3.RouteConfiguration{
		Name: InboundName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    InboundName,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName}}},
			}},
		}},
	}
	return l, rc, c, nil
}

// outboundFilters is what the mesh routes a sidecar's outbound listener
// may serve need of its filters (every service's: the listener is the same
// whichever services a sidecar may call).
func outboundFilters(m *model.Model) listenerFilters {
	var want listenerFilters
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			want.need(port.Routes)
			for _, rules := range port.ConsumerRoutes {
				want.need(rules)
			}
		}
	}
	want.fault = modelHasFault(m)
	want.buffer = modelAnyRouteTraffic(m, hasRequestLimit)
	want.responseLimit = modelAnyRouteTraffic(m, hasResponseLimit)
	want.localRateLimit = modelAnyRouteTraffic(m, hasLocalRateLimit)
	want.setGlobalRateLimit(m, modelAnyRouteTraffic(m, hasGlobalRateLimit), modelAnyRouteTraffic(m, deniesOnFailure))
	want.openAPI = modelAnyRouteTraffic(m, hasRequestValidation)
	return want
}
