package model

import (
	"slices"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// L4 protocols of a gateway port.
const (
	// ProtocolTCP: every connection goes to the port's TCPRoute (a
	// gateway port); a service port of protocol TCP (IsTCP).
	ProtocolTCP = "TCP"
	// ProtocolTLSPassthrough: each TLS connection goes to the TLSRoute its
	// SNI selects: not terminated (a listener in mode Passthrough), or
	// terminated at the gateway (L4Route.Terminate, a listener in mode
	// Terminate).
	ProtocolTLSPassthrough = "TLSPassthrough"
)

// IsTCP reports whether the service's ports are TCP: its sidecar's
// inbound listener proxies bytes (mTLS, L4 authorization), and callers
// reach it through explicit outbound TCP listeners (policy allows no mix of
// TCP and HTTP ports).
func (s *Service) IsTCP() bool { return len(s.Ports) > 0 && s.Ports[0].Protocol == ProtocolTCP }

// PortL4 is where the connections of a port of TCP listeners, or of TLS
// listeners in mode Passthrough, go.
type PortL4 struct {
	// Protocol is ProtocolTCP or ProtocolTLSPassthrough.
	Protocol string `json:"protocol"`
	// Routes: for TCP at most one, the first attached route (the oldest by
	// metadata.creationTimestamp, then by namespace and name); for TLS one
	// per attached route that some SNI selects, in that order. None: the
	// port refuses connections.
	Routes []*L4Route `json:"routes,omitempty"`
}

// L4Route is a TCPRoute or TLSRoute attached to a port.
type L4Route struct {
	Route NamespacedName `json:"route"`
	Kind  string         `json:"kind"`
	// ServerNames are the SNI names (exact, or "*.suffix") that select the
	// route (TLS).
	ServerNames []string `json:"serverNames,omitempty"`
	// Default: the route takes the connections no server name selects
	// (TCP; TLS with no hostname on the listener and the route).
	Default bool `json:"default,omitempty"`
	// Backends by weight; one without a cluster does not resolve (its
	// share of the connections is refused).
	Backends []*Backend `json:"backends"`
	// Terminate, for a route attached through a TLS listener in mode
	// Terminate, is the TLS the gateway terminates (the listener's
	// certificates and options) before forwarding the plaintext bytes.
	Terminate *TLSChain `json:"terminate,omitempty"`
}

// terminatesTLS reports whether a listener of protocol TLS is in mode
// Terminate (the default mode).
func terminatesTLS(l *gwapiv1.Listener) bool {
	return l.Protocol == gwapiv1.TLSProtocolType && l.TLS != nil && (l.TLS.Mode == nil || *l.TLS.Mode == gwapiv1.TLSModeTerminate)
}

// l4Protocol reports whether listeners (all of one port: the policy
// refuses mixed protocols on a port) are TCP or TLS, and which.
func l4Protocol(listeners []ownedListener) string {
	for _, ol := range listeners {
		switch ol.listener.Protocol {
		case gwapiv1.TCPProtocolType:
			return ProtocolTCP
		case gwapiv1.TLSProtocolType:
			return ProtocolTLSPassthrough
		}
	}
	return ""
}

// l4Source is a TCPRoute or TLSRoute of the set, as the compiler reads it.
type l4Source struct {
	name       NamespacedName
	created    time.Time
	kind       string
	parentRefs []gwapiv1.ParentReference
	hostnames  []gwapiv1.Hostname
	backends   []gwapiv1.BackendRef // of its first rule
}

// l4Sources lists the set's routes of the kind a port of protocol takes.
func l4Sources(set *policy.Set, protocol string) []l4Source {
	var out []l4Source
	first := func(rules [][]gwapiv1.BackendRef) []gwapiv1.BackendRef {
		if len(rules) == 0 {
			return nil
		}
		return rules[0]
	}
	switch protocol {
	case ProtocolTCP:
		for _, r := range set.TCPRoutes {
			out = append(out, l4Source{name: NamespacedName{Namespace: orDefault(r.Namespace), Name: r.Name}, created: r.CreationTimestamp.Time, kind: policy.KindTCPRoute,
				parentRefs: r.Spec.ParentRefs, backends: first(r.L4Rules())})
		}
	case ProtocolTLSPassthrough:
		for _, r := range set.TLSRoutes {
			out = append(out, l4Source{name: NamespacedName{Namespace: orDefault(r.Namespace), Name: r.Name}, created: r.CreationTimestamp.Time, kind: policy.KindTLSRoute,
				parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, backends: first(r.L4Rules())})
		}
	}
	slices.SortStableFunc(out, func(a, b l4Source) int { return compareRouteAge(a.created, a.name, b.created, b.name) })
	return out
}

// l4Attaches reports whether one of the route's parentRefs selects the
// listener ol, and the listener allows routes from its namespace.
func l4Attaches(ol ownedListener, r l4Source) bool {
	if !ol.allows(r.name.Namespace) {
		return false
	}
	l := ol.listener
	for _, ref := range r.parentRefs {
		if !isListenerOwnerRef(ref.Group, ref.Kind, ol.kind) {
			continue
		}
		if string(ref.Name) != ol.owner.Name || refNamespace(ref.Namespace, r.name.Namespace) != ol.owner.Namespace {
			continue
		}
		if ref.SectionName != nil && *ref.SectionName != l.Name {
			continue
		}
		if ref.Port != nil && *ref.Port != l.Port {
			continue
		}
		return true
	}
	return false
}

// compilePortL4 is the L4 of a port whose listeners are TCP or TLS, nil
// for an HTTP or HTTPS port.
func (m *Model) compilePortL4(listeners []ownedListener, set *policy.Set) *PortL4 {
	protocol := l4Protocol(listeners)
	if protocol == "" {
		return nil
	}
	out := &PortL4{Protocol: protocol}
	sources := l4Sources(set, protocol)
	var byRoute []*L4Route
	// A route attached to a terminating listener and to a passthrough one
	// is two: the TLS differs.
	type routeKey struct {
		route     NamespacedName
		terminate string // the terminating listener, "" for none
	}
	routeOf := map[routeKey]*L4Route{}
	claimed := map[string]bool{} // SNI names taken by an earlier route
	for _, ol := range listeners {
		lh := listenerHostname(ol.listener)
		var terminate *TLSChain
		if terminatesTLS(ol.listener) {
			terminate = listenerTLSChain(ol, set)
		}
		key := func(r l4Source) routeKey {
			if terminate == nil {
				return routeKey{route: r.name}
			}
			return routeKey{route: r.name, terminate: terminate.Listener}
		}
		for _, r := range sources {
			if !l4Attaches(ol, r) {
				continue
			}
			var names []string
			if protocol == ProtocolTLSPassthrough {
				for _, h := range intersectHostnames(lh, r.hostnames) {
					if !claimed[h] {
						claimed[h] = true
						names = append(names, h)
					}
				}
				if len(names) == 0 {
					continue
				}
			} else if len(byRoute) > 0 && routeOf[key(r)] == nil {
				continue // TCP: the first route only
			}
			lr := routeOf[key(r)]
			if lr == nil {
				lr = &L4Route{Route: r.name, Kind: r.kind, Backends: m.l4Backends(r, set), Terminate: terminate}
				routeOf[key(r)] = lr
				byRoute = append(byRoute, lr)
			}
			lr.Default = lr.Default || protocol == ProtocolTCP
			for _, n := range names {
				if n == "*" {
					lr.Default = true
					continue
				}
				lr.ServerNames = append(lr.ServerNames, n)
			}
		}
	}
	out.Routes = byRoute
	return out
}

// l4Backends compiles the backendRefs of an L4 route's rule.
func (m *Model) l4Backends(r l4Source, set *policy.Set) []*Backend {
	permitted := func(routeNamespace, serviceNamespace, serviceName string) bool {
		return set.RouteBackendPermitted(r.kind, routeNamespace, serviceNamespace, serviceName)
	}
	out := make([]*Backend, 0, len(r.backends))
	for _, ref := range r.backends {
		b := &Backend{
			Service: NamespacedName{Namespace: refNamespace(ref.Namespace, r.name.Namespace), Name: string(ref.Name)},
			Weight:  1,
		}
		if ref.Weight != nil {
			b.Weight = *ref.Weight
		}
		if ref.Port != nil {
			b.Port = *ref.Port
		}
		if ref.Kind == nil || isServiceRef(ref.Group, ref.Kind) {
			b.Cluster = m.backendCluster(r.name.Namespace, b, permitted)
		}
		out = append(out, b)
	}
	return out
}
