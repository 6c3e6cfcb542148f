package policy

import (
	"cmp"
	"fmt"
	"slices"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Kinds of the Gateway API's L4 routes.
const (
	KindTCPRoute = "TCPRoute"
	KindTLSRoute = "TLSRoute"
	// GatewayAPIV1alpha2 and GatewayAPIV1alpha3 are the older versions of
	// TCPRoute and TLSRoute: the same fields as their v1.
	GatewayAPIV1alpha2 = "gateway.networking.k8s.io/v1alpha2"
	GatewayAPIV1alpha3 = "gateway.networking.k8s.io/v1alpha3"
)

// TCPRoute is a Gateway API TCPRoute with the place it was loaded from: the
// connections of a Gateway listener of protocol TCP, forwarded byte for
// byte to its backendRefs (by weight).
type TCPRoute struct {
	gwapiv1.TCPRoute
	Source Source
}

// TLSRoute is a Gateway API TLSRoute with the place it was loaded from:
// the TLS connections of a Gateway listener of protocol TLS in mode
// Passthrough whose SNI is one of its hostnames, forwarded without being
// terminated to its backendRefs (by weight).
type TLSRoute struct {
	gwapiv1.TLSRoute
	Source Source
}

// L4Rules are the backendRefs of each rule of an L4 route.
func (r *TCPRoute) L4Rules() [][]gwapiv1.BackendRef {
	out := make([][]gwapiv1.BackendRef, len(r.Spec.Rules))
	for i, rule := range r.Spec.Rules {
		out[i] = rule.BackendRefs
	}
	return out
}

// L4Rules are the backendRefs of each rule of an L4 route.
func (r *TLSRoute) L4Rules() [][]gwapiv1.BackendRef {
	out := make([][]gwapiv1.BackendRef, len(r.Spec.Rules))
	for i, rule := range r.Spec.Rules {
		out[i] = rule.BackendRefs
	}
	return out
}

// routeKindFits reports whether a route of kind attaches to a listener of
// protocol: HTTPRoute to HTTP and HTTPS, TCPRoute to TCP, TLSRoute to TLS.
func routeKindFits(kind string, protocol gwapiv1.ProtocolType) bool {
	switch kind {
	case KindTCPRoute:
		return protocol == gwapiv1.TCPProtocolType
	case KindTLSRoute:
		return protocol == gwapiv1.TLSProtocolType
	default:
		return protocol == gwapiv1.HTTPProtocolType || protocol == gwapiv1.HTTPSProtocolType
	}
}

// listenerRouteKind is the route kind a listener of protocol takes.
func listenerRouteKind(protocol gwapiv1.ProtocolType) string {
	switch protocol {
	case gwapiv1.TCPProtocolType:
		return KindTCPRoute
	case gwapiv1.TLSProtocolType:
		return KindTLSRoute
	}
	return KindHTTPRoute
}

// l4Shim is an HTTPRoute standing for an L4 route in the checks both
// share (parentRefs, their attachment, backendRefs): same metadata, source,
// parentRefs and hostnames; kind says which route it is.
func l4Shim(kind string, meta gwapiv1.HTTPRoute, src Source) *HTTPRoute {
	return &HTTPRoute{HTTPRoute: meta, Source: src, routeKind: kind}
}

// validateTCPRoutes checks every well-formed TCPRoute.
func (l *loader) validateTCPRoutes(ix *setIndex) {
	slices.SortFunc(l.set.TCPRoutes, func(a, b *TCPRoute) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, r := range l.set.TCPRoutes {
		if l.malformed[resourceKey{KindTCPRoute, r.Namespace, r.Name}] {
			continue
		}
		shim := l4Shim(KindTCPRoute, gwapiv1.HTTPRoute{ObjectMeta: r.ObjectMeta,
			Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: r.Spec.CommonRouteSpec}}, r.Source)
		l.checkL4Route(shim, r.L4Rules(), ix)
	}
}

// validateTLSRoutes checks every well-formed TLSRoute.
func (l *loader) validateTLSRoutes(ix *setIndex) {
	slices.SortFunc(l.set.TLSRoutes, func(a, b *TLSRoute) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, r := range l.set.TLSRoutes {
		if l.malformed[resourceKey{KindTLSRoute, r.Namespace, r.Name}] {
			continue
		}
		for i, h := range r.Spec.Hostnames {
			if msg := checkHostname(string(h), true); msg != "" {
				l.errorf(r.Source, fmt.Sprintf("spec.hostnames[%d]", i), "invalid hostname %q: %s", h, msg)
			}
		}
		shim := l4Shim(KindTLSRoute, gwapiv1.HTTPRoute{ObjectMeta: r.ObjectMeta,
			Spec: gwapiv1.HTTPRouteSpec{CommonRouteSpec: r.Spec.CommonRouteSpec, Hostnames: r.Spec.Hostnames}}, r.Source)
		l.checkL4Route(shim, r.L4Rules(), ix)
	}
}

// checkL4Route checks the parentRefs and backendRefs of an L4 route (its
// shim). Every rule's backendRefs are checked; only the first rule is
// served (a TCP or TLS connection has nothing to match rules on), so more
// than one is an error.
func (l *loader) checkL4Route(shim *HTTPRoute, rules [][]gwapiv1.BackendRef, ix *setIndex) {
	src := shim.Source
	if len(shim.Spec.ParentRefs) == 0 {
		l.errorf(src, "spec.parentRefs", "at least one parentRef is required: a %s attaches to Gateway listeners of protocol %s",
			shim.routeKind, map[string]string{KindTCPRoute: "TCP", KindTLSRoute: "TLS"}[shim.routeKind])
	}
	for i, pr := range shim.Spec.ParentRefs {
		if pr.Kind != nil && *pr.Kind == KindService {
			l.parentErrorf(src, i, fmt.Sprintf("spec.parentRefs[%d].kind", i), string(gwapiv1.RouteReasonUnsupportedValue),
				"a %s attaches to Gateway listeners; a mesh TCP service is reached through its port (protocol TCP), not a route", shim.routeKind)
			continue
		}
		l.checkParentRef(shim, i, ix)
	}
	if len(rules) == 0 {
		l.errorf(src, "spec.rules", "at least one rule is required")
	}
	if len(rules) > 1 {
		l.errorf(src, "spec.rules", "%d rules: a %s has one rule (a connection has nothing to choose between rules by)", len(rules), shim.routeKind)
	}
	for i, refs := range rules {
		for j := range refs {
			br := gwapiv1.HTTPBackendRef{BackendRef: refs[j]}
			l.checkBackendRef(shim, fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), &br, ix.services)
		}
	}
}

// checkPassthrough checks the tls of a listener of protocol TLS: mode
// Passthrough (the connection is forwarded as is, chosen by its SNI), no
// certificates; or mode Terminate (the default), whose certificateRefs and
// options are an HTTPS listener's (TLS is terminated at the gateway, the
// plaintext bytes forwarded).
func (l *loader) checkPassthrough(o listenerOwner, i int, p string, ls *gwapiv1.Listener) {
	t := ls.TLS
	switch {
	case t == nil:
		l.listenerErrorf(o, i, p+".tls", lsInvalid, "tls is required for protocol TLS (mode Passthrough, or Terminate with certificateRefs)")
	case t.Mode == nil || *t.Mode == gwapiv1.TLSModeTerminate:
		if _, acme := t.Options[TLSOptionACMEIssuer]; acme {
			l.listenerErrorf(o, i, mapKeyPath(p+".tls.options", TLSOptionACMEIssuer), lsInvalid, "an ACME issuer is for HTTPS listeners (its challenges are HTTP or TLS-ALPN)")
		}
		if _, hsts := t.Options[TLSOptionHSTS]; hsts {
			l.listenerErrorf(o, i, mapKeyPath(p+".tls.options", TLSOptionHSTS), lsInvalid, "Strict-Transport-Security is an HTTP header: for HTTPS listeners")
		}
		l.checkListenerTLS(o, i, p+".tls", t)
	case *t.Mode != gwapiv1.TLSModePassthrough:
		l.listenerErrorf(o, i, p+".tls.mode", lsInvalid, "unknown mode %q (want Passthrough or Terminate)", *t.Mode)
	case len(t.CertificateRefs) > 0:
		l.listenerErrorf(o, i, p+".tls.certificateRefs", lsInvalid, "certificateRefs are not used with mode Passthrough: the backend presents its own certificate")
	}
}

// routeParts are the labels, annotations, spec and parentRefs of a route
// of any kind, for its status.
func routeParts(res any) (labels, annotations map[string]string, spec any, parentRefs []gwapiv1.ParentReference) {
	switch r := res.(type) {
	case *HTTPRoute:
		if r.GRPC != nil {
			return r.Labels, r.Annotations, *r.GRPC, r.Spec.ParentRefs
		}
		return r.Labels, r.Annotations, r.Spec, r.Spec.ParentRefs
	case *TCPRoute:
		return r.Labels, r.Annotations, r.Spec, r.Spec.ParentRefs
	case *TLSRoute:
		return r.Labels, r.Annotations, r.Spec, r.Spec.ParentRefs
	}
	return nil, nil, nil, nil
}

// checkTCPPort checks the port i of s, of protocol TCP: a Service's ports
// are all TCP or none (its sidecar's inbound listener proxies either bytes
// or HTTP).
func (l *loader) checkTCPPort(s *Service, i int) {
	for j, other := range s.Spec.Ports {
		if other.Protocol != ProtocolTCP {
			l.errorf(s.Source, fmt.Sprintf("spec.ports[%d].protocol", i),
				"protocol TCP: every port of the service must be TCP (spec.ports[%d] is %s): its sidecar proxies either bytes or HTTP; make two services", j, other.Protocol)
			return
		}
	}
}

// IsTCP reports whether the service's ports are TCP (its sidecar proxies
// bytes, with mTLS, and enforces SecurityPolicy rules at L4).
func (svc *Service) IsTCP() bool {
	return len(svc.Spec.Ports) > 0 && svc.Spec.Ports[0].Protocol == ProtocolTCP
}

// checkL4Rules: a rule of a policy targeting a TCP service can name only
// who calls (from), as SPIFFE identities or addresses: a connection has no
// method, path or header (to).
func (l *loader) checkL4Rules(sp *SecurityPolicy, services map[nsName]*Service) {
	for _, ref := range sp.Spec.TargetRefs {
		if ref.Kind != KindService {
			continue
		}
		svc := services[nsName{sp.Namespace, ref.Name}]
		if svc == nil || !svc.IsTCP() {
			continue
		}
		for i, r := range sp.Spec.Rules {
			if len(r.To) > 0 {
				l.errorf(sp.Source, fmt.Sprintf("spec.rules[%d].to", i),
					"service %q is TCP: its rules apply to connections, which have no method, path or header; keep only from (identities, services, namespaces, ipBlocks)", ref.Name)
			}
			for j, f := range r.From {
				if len(f.Principals) > 0 || len(f.Claims) > 0 {
					l.errorf(sp.Source, fmt.Sprintf("spec.rules[%d].from[%d]", i, j),
						"service %q is TCP: a connection carries no token, so principals and claims cannot match; keep identities, services, namespaces, ipBlocks", ref.Name)
				}
			}
		}
		if sp.Spec.JWT != nil || sp.Spec.APIKey != nil || sp.Spec.BasicAuth != nil {
			l.errorf(sp.Source, "spec", "service %q is TCP: jwt, apiKey and basicAuth authenticate HTTP requests, not connections", ref.Name)
		}
	}
}

// fittingKinds are the kinds of a listener's allowedRoutes.kinds that it
// takes (those that fit its protocol), for its status when others do not
// (InvalidRouteKinds): none when none fits.
func fittingKinds(ls *gwapiv1.Listener) []gwapiv1.RouteGroupKind {
	var out []gwapiv1.RouteGroupKind
	if ls.AllowedRoutes == nil {
		return nil
	}
	for _, k := range ls.AllowedRoutes.Kinds {
		if (k.Group == nil || *k.Group == GatewayGroup) && routeKindFits(string(k.Kind), ls.Protocol) &&
			slices.Contains([]string{KindHTTPRoute, KindTCPRoute, KindTLSRoute}, string(k.Kind)) {
			out = append(out, gwapiv1.RouteGroupKind{Group: ptrTo(gwapiv1.Group(GatewayGroup)), Kind: k.Kind})
		}
	}
	return out
}
