package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// DefaultGatewayAddress is where a Gateway's listeners bind when it has no
// spec.addresses.
const DefaultGatewayAddress = "127.0.0.1"

// BindAddress is the first IP address the Gateway's listeners bind (see
// BindAddresses).
func (g *Gateway) BindAddress() string { return g.BindAddresses()[0] }

// BindAddresses are the IP addresses the Gateway's listeners bind, each
// listener on each: the values of its IPAddress spec.addresses entries
// (type IPAddress is the default), in order, without repeats, or
// DefaultGatewayAddress when it has none.
func (g *Gateway) BindAddresses() []string {
	var out []string
	for _, a := range g.Spec.Addresses {
		if a.Type != nil && *a.Type != gwapiv1.IPAddressType {
			continue
		}
		if ip, err := netip.ParseAddr(a.Value); err == nil && !slices.Contains(out, ip.String()) {
			out = append(out, ip.String())
		}
	}
	if len(out) == 0 {
		return []string{DefaultGatewayAddress}
	}
	return out
}

// LookupGateway returns the Gateway namespace/name, or nil.
func (s *Set) LookupGateway(namespace, name string) *Gateway {
	for _, g := range s.Gateways {
		if g.Namespace == namespace && g.Name == name {
			return g
		}
	}
	return nil
}

// GatewayBound reports whether the route has a Gateway (or ListenerSet) parent: its
// backendRefs to other namespaces then need ReferenceGrants
// (Set.BackendPermitted). A mesh route (only Service parents) may send to
// any namespace without one, as GEP-1294 specifies: it augments Services
// that callers can reach anyway, it exposes nothing.
func (r *HTTPRoute) GatewayBound() bool {
	return slices.ContainsFunc(r.Spec.ParentRefs, func(pr gwapiv1.ParentReference) bool {
		return (pr.Group == nil || *pr.Group == GatewayGroup) && (pr.Kind == nil || *pr.Kind == KindGateway || *pr.Kind == KindListenerSet)
	})
}

// BackendPermitted reports whether a Gateway-bound HTTPRoute of
// routeNamespace may send to the Service serviceNamespace/serviceName:
// always in its own namespace; in another only with a ReferenceGrant there
// from HTTPRoutes of routeNamespace to that Service (or every Service), as
// the Gateway API specifies.
func (s *Set) BackendPermitted(routeNamespace, serviceNamespace, serviceName string) bool {
	return s.RouteBackendPermitted(KindHTTPRoute, routeNamespace, serviceNamespace, serviceName)
}

// RouteBackendPermitted is BackendPermitted for a route of a kind
// (KindHTTPRoute or KindGRPCRoute): the ReferenceGrant must be from
// routes of that kind.
func (s *Set) RouteBackendPermitted(routeKind, routeNamespace, serviceNamespace, serviceName string) bool {
	routeNamespace, serviceNamespace = cmp.Or(routeNamespace, DefaultNamespace), cmp.Or(serviceNamespace, DefaultNamespace)
	if routeNamespace == serviceNamespace {
		return true
	}
	for _, g := range s.ReferenceGrants {
		if cmp.Or(g.Namespace, DefaultNamespace) != serviceNamespace {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gwapiv1.ReferenceGrantFrom) bool {
			return string(f.Group) == GatewayGroup && string(f.Kind) == routeKind && string(f.Namespace) == routeNamespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gwapiv1.ReferenceGrantTo) bool {
			group := string(t.Group)
			return (group == "" || group == coreGroupAlias || group == MeshgateGroup) && string(t.Kind) == KindService &&
				(t.Name == nil || string(*t.Name) == serviceName)
		})
		if from && to {
			return true
		}
	}
	return false
}

// ListenerAllows reports whether a route of routeNamespace may attach to
// the listener ls of g, by its allowedRoutes.namespaces: Same (the
// default) its namespace, All any, None none, Selector those whose labels
// (a Namespace document's metadata.labels, and always
// kubernetes.io/metadata.name: <name>) the selector matches.
func (s *Set) ListenerAllows(g *Gateway, ls *gwapiv1.Listener, routeNamespace string) bool {
	return s.routesAllowed(g.ownerNamespace(), ls, routeNamespace)
}

// routesAllowed applies the allowedRoutes.namespaces of a listener of a
// Gateway or ListenerSet of ownerNamespace to a route of routeNamespace.
func (s *Set) routesAllowed(ownerNamespace string, ls *gwapiv1.Listener, routeNamespace string) bool {
	routeNamespace = cmp.Or(routeNamespace, DefaultNamespace)
	ar := ls.AllowedRoutes
	if ar == nil || ar.Namespaces == nil || ar.Namespaces.From == nil {
		return routeNamespace == ownerNamespace
	}
	return s.namespaceAdmitted(*ar.Namespaces.From, ar.Namespaces.Selector, ownerNamespace, routeNamespace)
}

// NamespaceLabels are the labels of a namespace: those of its Namespace
// document, if any, and kubernetes.io/metadata.name, its name.
func (s *Set) NamespaceLabels(name string) map[string]string {
	out := map[string]string{namespaceNameLabel: name}
	for _, ns := range s.Namespaces {
		if ns.Name == name {
			for k, v := range ns.Labels {
				if k != namespaceNameLabel {
					out[k] = v
				}
			}
		}
	}
	return out
}

// namespaceNameLabel is the label Kubernetes gives every namespace: its name.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// LookupService returns the Service namespace/name, or nil.
func (s *Set) LookupService(namespace, name string) *Service {
	for _, svc := range s.Services {
		if svc.Namespace == namespace && svc.Name == name {
			return svc
		}
	}
	return nil
}

// LookupPort returns the service port that ref names, by name or by number
// ("http" or "8080"); an empty ref names the only port of a one-port
// service. It returns nil when there is no such port.
func (svc *Service) LookupPort(ref string) *ServicePort {
	if ref == "" {
		if len(svc.Spec.Ports) == 1 {
			return &svc.Spec.Ports[0]
		}
		return nil
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Name == ref || strconv.Itoa(int(p.Port)) == ref {
			return p
		}
	}
	return nil
}
