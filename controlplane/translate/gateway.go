package translate

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/controlplane/model"
)

// gatewayPart is what every node of one Gateway receives, secrets aside.
type gatewayPart struct {
	listeners []*listenerv3.Listener
	routes    []*routev3.RouteConfiguration
	clusters  *clusterSet
	// secrets are the certificates of its HTTPS listeners (SDS).
	secrets []*tlsv3.Secret
}

// buildGateway translates a Gateway: per port, a listener at the
// Gateway's address and its route configuration (RDS, named like the
// listener) with a virtual host per hostname, and the clusters the routes
// forward to.
func buildGateway(p parts, gw *model.Gateway) (*gatewayPart, error) {
	m, _ := p.translation()
	clusters := newClusterCollector(p)
	part := &gatewayPart{}
	for _, port := range gw.Ports {
		name := gw.Namespace + "/" + gw.Name + "/" + strconv.Itoa(int(port.Number))
		if port.L4 != nil {
			l, secrets, err := l4Listener(m, clusters, name, gw, port)
			if err != nil {
				return nil, err
			}
			part.listeners = append(part.listeners, l)
			part.secrets = append(part.secrets, secrets...)
			continue
		}
		want := listenerFilters{rbac: gw.Authorization != nil, authorization: gw.Authorization, authentication: gw.Authentication}
		want.addExtAuth(gw.ExtAuth)
		for _, vh := range port.VirtualHosts {
			want.need(vh.Rules)
			want.fault = want.fault || needsFault(m, vh.Rules, port.Traffic)
			want.buffer = want.buffer || anyRouteTraffic(m, vh.Rules, port.Traffic, hasRequestLimit)
			want.responseLimit = want.responseLimit || anyRouteTraffic(m, vh.Rules, port.Traffic, hasResponseLimit)
			want.openAPI = want.openAPI || anyRouteTraffic(m, vh.Rules, port.Traffic, hasRequestValidation)
			want.grpcWeb = want.grpcWeb || routesToGRPC(m, vh.Rules)
			want.localRateLimit = want.localRateLimit || anyRouteTraffic(m, vh.Rules, port.Traffic, hasLocalRateLimit)
			want.setGlobalRateLimit(m, anyRouteTraffic(m, vh.Rules, port.Traffic, hasGlobalRateLimit), anyRouteTraffic(m, vh.Rules, port.Traffic, deniesOnFailure))
			want.cache = want.cache || anyRouteTraffic(m, vh.Rules, port.Traffic, hasCache)
			want.cacheBytes = cacheBudget(m, vh.Rules, port.Traffic, want.cacheBytes)
		}
		filters, err := httpFilters(name, want)
		if err != nil {
			return nil, err
		}
		l, err := listener(name, gw.Address, uint32(port.Number), corev3.TrafficDirection_UNSPECIFIED, true, filters)
		if err != nil {
			return nil, err
		}
		if port.TLS != nil {
			secrets, err := terminateTLS(l, port.TLS)
			if err != nil {
				return nil, err
			}
			part.secrets = append(part.secrets, secrets...)
		}
		for _, addr := range gw.AdditionalAddresses {
			// Envoy's semantics: the listener, its filter chains and routes,
			// served on each address as on its address.
			l.AdditionalAddresses = append(l.AdditionalAddresses,
				&listenerv3.AdditionalAddress{Address: socketAddress(addr, uint32(port.Number))})
		}
		if err := traceListener(l, m, gw.Name, gw.Namespace, TracingRoleGateway); err != nil {
			return nil, err
		}
		if err := logListener(l, m, gw.Name, gw.Namespace, TracingRoleGateway); err != nil {
			return nil, err
		}
		// A listener's port is not part of its hostnames: "foo.com:8080" on
		// port 8080 is foo.com, and the backend receives it as sent.
		rc := &routev3.RouteConfiguration{Name: name, IgnorePortInHostMatching: true}
		for _, vh := range port.VirtualHosts {
			rs, err := routes(m, clusters, vh.Rules, port.Number, gw.Authorization, port.Traffic)
			if err != nil {
				return nil, err
			}
			if want.cache {
				if err := setResponseCaches(m, rs, vh.Rules, port.Traffic); err != nil {
					return nil, err
				}
			}
			vhost := &routev3.VirtualHost{
				Name:    name + "/" + vh.Hostname,
				Domains: []string{vh.Hostname},
				Routes:  rs,
			}
			setAttemptCounts(vhost, m, vh.Rules, port.Traffic, nil)
			setHSTS(vhost, vh.HSTS)
			rc.VirtualHosts = append(rc.VirtualHosts, vhost)
		}
		if want.buffer {
			if err := disableBufferElsewhere(rc); err != nil {
				return nil, err
			}
		}
		if err := disableExtAuthElsewhere(rc, want, gw.ExtAuth); err != nil {
			return nil, err
		}
		part.listeners = append(part.listeners, l)
		part.routes = append(part.routes, rc)
	}
	addExtAuthCluster(m, clusters, gw.ExtAuth)
	if clusters.err != nil {
		return nil, clusters.err
	}
	part.clusters = clusters.set()
	// A Secret used on several ports is one SDS secret.
	slices.SortStableFunc(part.secrets, func(a, b *tlsv3.Secret) int { return strings.Compare(a.Name, b.Name) })
	part.secrets = slices.CompactFunc(part.secrets, func(a, b *tlsv3.Secret) bool { return a.Name == b.Name })
	return part, nil
}
