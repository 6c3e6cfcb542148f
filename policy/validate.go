package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Namespaces: a backendRef of a Gateway-bound route to a Service of another
// namespace needs a ReferenceGrant in that namespace (Set.BackendPermitted),
// as the Gateway API specifies; without one it does not resolve
// (RefNotPermitted). A mesh route needs none (GEP-1294). A
// parentRef to a Gateway of another namespace follows the listener's
// allowedRoutes.namespaces (default Same), the Gateway owner's decision; a
// parentRef to a Service of another namespace needs nothing (a consumer
// route, in the mesh).

// nsName identifies a resource within its kind.
type nsName struct{ namespace, name string }

// refName names a referenced resource in a message: "name" when it is in
// the referrer's namespace, "namespace/name" otherwise.
func refName(namespace, name, from string) string {
	if namespace == from {
		return strconv.Quote(name)
	}
	return strconv.Quote(namespace + "/" + name)
}

// validate sorts the set, then checks every resource and the references
// between them, kind by kind (see kinds).
func (l *loader) validate() {
	byName := func(ns1, n1, ns2, n2 string) int {
		return cmp.Or(cmp.Compare(ns1, ns2), cmp.Compare(n1, n2))
	}
	slices.SortFunc(l.set.Gateways, func(a, b *Gateway) int { return byName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(l.set.HTTPRoutes, func(a, b *HTTPRoute) int { return byName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(l.set.Services, func(a, b *Service) int { return byName(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(l.set.GatewayClasses, func(a, b *GatewayClass) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(l.set.SecurityPolicies, func(a, b *SecurityPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})

	ix := &setIndex{
		gateways: make(map[nsName]*Gateway, len(l.set.Gateways)),
		services: make(map[nsName]*Service, len(l.set.Services)),
		routes:   make(map[nsName]bool, len(l.set.HTTPRoutes)),
	}
	for _, g := range l.set.Gateways {
		ix.gateways[nsName{g.Namespace, g.Name}] = g
	}
	for _, s := range l.set.Services {
		ix.services[nsName{s.Namespace, s.Name}] = s
	}
	ix.httpRouteNames = make(map[nsName]bool, len(l.set.HTTPRoutes))
	for _, r := range l.set.HTTPRoutes {
		ix.routes[nsName{r.Namespace, r.Name}] = true
		if r.GRPC == nil {
			ix.httpRouteNames[nsName{r.Namespace, r.Name}] = true
		}
	}
	for i := range kinds {
		kinds[i].validate(l, ix)
	}
}

// validateGatewayClasses checks every well-formed GatewayClass: those of
// other controllers only for a controllerName.
func (l *loader) validateGatewayClasses(*setIndex) {
	for _, gc := range l.set.GatewayClasses {
		if l.malformed[resourceKey{KindGatewayClass, "", gc.Name}] {
			continue
		}
		switch name := string(gc.Spec.ControllerName); {
		case name == "":
			l.errorf(gc.Source, "spec.controllerName", "controllerName is required (meshgate's is %s)", ControllerName)
		case !strings.Contains(name, "/"):
			l.errorf(gc.Source, "spec.controllerName", "invalid controllerName %q: want a domain-prefixed path, such as %s", name, ControllerName)
		case name == ControllerName && gc.Spec.ParametersRef != nil:
			l.errorf(gc.Source, "spec.parametersRef", "%s", notSupported("parametersRef"))
		}
	}
}

// validateReferenceGrants checks every well-formed ReferenceGrant. Grants
// of kinds meshgate does not use (from a GRPCRoute, to a Secret) are valid
// and grant nothing.
func (l *loader) validateReferenceGrants(*setIndex) {
	slices.SortFunc(l.set.ReferenceGrants, func(a, b *ReferenceGrant) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, g := range l.set.ReferenceGrants {
		if l.malformed[resourceKey{KindReferenceGrant, g.Namespace, g.Name}] {
			continue
		}
		src := g.Source
		if len(g.Spec.From) == 0 {
			l.errorf(src, "spec.from", "at least one from is required")
		}
		if len(g.Spec.To) == 0 {
			l.errorf(src, "spec.to", "at least one to is required")
		}
		for i, f := range g.Spec.From {
			p := fmt.Sprintf("spec.from[%d]", i)
			if f.Kind == "" {
				l.errorf(src, p+".kind", "kind is required (HTTPRoute)")
			}
			if msg := checkDNSLabel(string(f.Namespace)); msg != "" {
				l.errorf(src, p+".namespace", "invalid namespace %q: %s", f.Namespace, msg)
			}
		}
		for i, t := range g.Spec.To {
			if t.Kind == "" {
				l.errorf(src, fmt.Sprintf("spec.to[%d].kind", i), "kind is required (Service)")
			}
		}
	}
}

// validateServices checks every well-formed Service.
func (l *loader) validateServices(*setIndex) {
	for _, s := range l.set.Services {
		if !l.malformed[resourceKey{KindService, s.Namespace, s.Name}] {
			l.checkService(s)
		}
	}
}

// validateGateways checks every well-formed Gateway, that none is named
// like a Service, and that no two bind one address and port.
func (l *loader) validateGateways(ix *setIndex) {
	var wellFormed []*Gateway
	for _, g := range l.set.Gateways {
		if !l.malformed[resourceKey{KindGateway, g.Namespace, g.Name}] {
			l.checkGateway(g)
			wellFormed = append(wellFormed, g)
		}
		// A gateway node's SPIFFE identity is .../ns/<namespace>/svc/<gateway>
		// (docs/security.md): a Service of that name would share it.
		if s := ix.services[nsName{g.Namespace, g.Name}]; s != nil {
			l.errorf(g.Source, "metadata.name", "Gateway %q has the name of a Service (%s:%d): they would share one identity, %q; rename one",
				g.Name, s.Source.File, s.Source.Line, "spiffe://<trust-domain>/ns/"+g.Namespace+"/svc/"+g.Name)
		}
	}
	l.checkBindConflicts(wellFormed)
	l.validateListenerSets(ix)
}

// validateHTTPRoutes checks every well-formed HTTPRoute and its references.
func (l *loader) validateHTTPRoutes(ix *setIndex) {
	for _, r := range l.set.HTTPRoutes {
		if l.malformed[resourceKey{r.RouteKind(), r.Namespace, r.Name}] {
			continue
		}
		if r.GRPC != nil {
			l.checkGRPCRoute(r, ix)
		}
		l.checkHTTPRoute(r, ix)
	}
}

// checkLabels reports, through errorf (loader.errorf or docEffect.errorf),
// the invalid keys and values of labels.
func checkLabels(errorf func(src Source, field, format string, args ...any), src Source, path string, labels map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		field := mapKeyPath(path, k)
		if len(validation.IsQualifiedName(k)) > 0 {
			errorf(src, field, "invalid label key %q: want an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", k)
		}
		if v := labels[k]; len(validation.IsValidLabelValue(v)) > 0 {
			errorf(src, field, "invalid label value %q: want at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
		}
	}
}

func notSupported(what string) string { return what + " is not supported yet" }

// ---- Service ----

func (l *loader) checkService(s *Service) {
	src := s.Source
	if len(s.Spec.Ports) == 0 {
		l.errorf(src, "spec.ports", "at least one port is required")
	}
	names := make(map[string]int)
	numbers := make(map[int32]int)
	for i := range s.Spec.Ports {
		port := &s.Spec.Ports[i] // read only: resources are never modified after decoding
		p := fmt.Sprintf("spec.ports[%d]", i)
		if port.Port < 1 || port.Port > 65535 {
			l.errorf(src, p+".port", "port %d is out of range 1-65535", port.Port)
		} else if j, dup := numbers[port.Port]; dup {
			l.errorf(src, p+".port", "duplicate port %d (also spec.ports[%d])", port.Port, j)
		} else {
			numbers[port.Port] = i
		}
		if port.Name != "" {
			if msg := checkDNSLabel(port.Name); msg != "" {
				l.errorf(src, p+".name", "invalid port name %q: %s", port.Name, msg)
			} else if strings.Trim(port.Name, "0123456789-") == "" {
				l.errorf(src, p+".name", "invalid port name %q: must contain a letter", port.Name)
			} else if j, dup := names[port.Name]; dup {
				l.errorf(src, p+".name", "duplicate port name %q (also spec.ports[%d])", port.Name, j)
			} else {
				names[port.Name] = i
			}
		}
		switch port.Protocol {
		case ProtocolHTTP, ProtocolHTTP2: // "" was made HTTP when decoding
		case ProtocolTCP:
			l.checkTCPPort(s, i)
		default:
			l.errorf(src, p+".protocol", "unknown protocol %q (want HTTP, HTTP2 or TCP)", port.Protocol)
		}
		switch port.AppProtocol {
		case "", AppProtocolH2C, AppProtocolGRPC, AppProtocolWebSocket, AppProtocolHTTP:
			if port.Protocol == ProtocolHTTP2 && (port.AppProtocol == AppProtocolWebSocket || port.AppProtocol == AppProtocolHTTP) {
				l.errorf(src, p+".appProtocol", "appProtocol %q is HTTP/1.1 but protocol is HTTP2: drop one", port.AppProtocol)
			}
		default:
			l.errorf(src, p+".appProtocol", "unknown appProtocol %q (want %s, %s, %s or %s)", port.AppProtocol,
				AppProtocolH2C, AppProtocolGRPC, AppProtocolWebSocket, AppProtocolHTTP)
		}
	}
	l.checkEndpoints(s)
}

// CheckEndpoints reports what is wrong with the endpoints of a Service (its
// spec.endpoints), exactly as loading the Service reports it: a caller that
// validates a Service without its endpoints (Input.Services) and its
// endpoints apart gets the errors a load of the whole Service would give.
func CheckEndpoints(s *Service) ErrorList {
	l := &loader{dropped: map[documentID][]string{}}
	l.checkEndpoints(s)
	return l.errs
}

// EndpointErrors is CheckEndpoints endpoint by endpoint: the errors of
// each endpoint of s that has some, by its index in spec.endpoints. A
// caller that serves a Service's valid endpoints and leaves the others out
// (the control plane with discovered services) knows which.
func EndpointErrors(s *Service) map[int]ErrorList {
	var out map[int]ErrorList
	for i := range s.Spec.Endpoints {
		l := &loader{dropped: map[documentID][]string{}}
		l.checkEndpoint(s, i)
		if len(l.errs) > 0 {
			if out == nil {
				out = make(map[int]ErrorList)
			}
			out[i] = l.errs
		}
	}
	return out
}

func (l *loader) checkEndpoints(s *Service) {
	for i := range s.Spec.Endpoints {
		l.checkEndpoint(s, i)
	}
}

// checkEndpoint validates the endpoint i of s.
func (l *loader) checkEndpoint(s *Service, i int) {
	src, ep := s.Source, &s.Spec.Endpoints[i]
	p := fmt.Sprintf("spec.endpoints[%d]", i)
	if ep.Address == "" {
		l.errorf(src, p+".address", "address is required")
	} else if msg := checkHostPort(ep.Address); msg != "" {
		l.errorf(src, p+".address", "%s", msg)
	}
	switch {
	case ep.Port == "" && len(s.Spec.Ports) > 1:
		l.errorf(src, p+".port", "port is required: the service has %d ports (give a port name or number)", len(s.Spec.Ports))
	case ep.Port != "" && s.LookupPort(ep.Port) == nil:
		l.errorf(src, p+".port", "the service has no port %q", ep.Port)
	}
	checkLabels(l.errorf, src, p+".labels", ep.Labels)
}

// ---- Gateway ----

func (l *loader) checkGateway(g *Gateway) {
	src, spec := g.Source, &g.Spec
	if len(spec.Listeners) == 0 {
		l.errorf(src, "spec.listeners", "at least one listener is required")
	}
	type portHost struct {
		port int32
		host string
	}
	names := make(map[gwapiv1.SectionName]int)
	bound := make(map[portHost]int)
	protocols := make(map[gwapiv1.PortNumber]int) // the first listener on each port
	for i := range spec.Listeners {
		ls := &spec.Listeners[i]
		p := fmt.Sprintf("spec.listeners[%d]", i)
		if ls.Name != "" && checkSubdomain(string(ls.Name)) == "" {
			if j, dup := names[ls.Name]; dup {
				l.listenerErrorf(g, i, p+".name", lsInvalid, "duplicate listener name %q (also spec.listeners[%d])", ls.Name, j)
			} else {
				names[ls.Name] = i
			}
		}
		l.checkListener(g, i, p, ls, true)
		if j, other := protocols[ls.Port]; other && spec.Listeners[j].Protocol != ls.Protocol {
			l.listenerErrorf(g, i, p+".protocol", string(gwapiv1.ListenerReasonProtocolConflict), "listener %q conflicts with listener %q: port %d serves %s, not %s",
				ls.Name, spec.Listeners[j].Name, ls.Port, spec.Listeners[j].Protocol, ls.Protocol)
		} else if !other {
			protocols[ls.Port] = i
		}
		if ls.Port >= 1 && ls.Port <= 65535 {
			key := portHost{ls.Port, listenerHostnameOf(ls)}
			if j, dup := bound[key]; dup {
				l.listenerErrorf(g, i, p, string(gwapiv1.ListenerReasonHostnameConflict), "listener %q conflicts with listener %q: same port %d and %s",
					ls.Name, spec.Listeners[j].Name, ls.Port, describeHostname(key.host))
			} else {
				bound[key] = i
			}
		}
	}
	l.checkGatewayAddresses(g)
	if spec.Infrastructure != nil {
		l.errorf(src, "spec.infrastructure", "%s", notSupported("infrastructure"))
	}
	l.checkAllowedListeners(g)
	if spec.TLS != nil {
		l.errorf(src, "spec.tls", "%s", notSupported("tls"))
	}
	if spec.DefaultScope != "" {
		l.errorf(src, "spec.defaultScope", "%s", notSupported("defaultScope"))
	}
}

// checkListener checks the fields of the listener i of o (a Gateway's or
// a ListenerSet's) at path p, each on its own: name, port, protocol (when
// protocol is set: a listener that lost a conflict is not also reported
// for its protocol), hostname, tls and allowedRoutes.
func (l *loader) checkListener(o listenerOwner, i int, p string, ls *gwapiv1.Listener, protocol bool) {
	switch {
	case ls.Name == "":
		l.listenerErrorf(o, i, p+".name", lsInvalid, "name is required")
	case checkSubdomain(string(ls.Name)) != "":
		l.listenerErrorf(o, i, p+".name", lsInvalid, "invalid listener name %q: %s", ls.Name, checkSubdomain(string(ls.Name)))
	}
	if ls.Port < 1 || ls.Port > 65535 {
		l.listenerErrorf(o, i, p+".port", string(gwapiv1.ListenerReasonPortUnavailable), "port %d is out of range 1-65535", ls.Port)
	}
	switch ls.Protocol {
	case gwapiv1.HTTPProtocolType, gwapiv1.HTTPSProtocolType, gwapiv1.TCPProtocolType, gwapiv1.TLSProtocolType:
	case gwapiv1.UDPProtocolType:
		if protocol {
			l.listenerErrorf(o, i, p+".protocol", string(gwapiv1.ListenerReasonUnsupportedProtocol), "protocol %s is not supported yet (only HTTP, HTTPS, TCP and TLS)", ls.Protocol)
		}
	case "":
		l.listenerErrorf(o, i, p+".protocol", string(gwapiv1.ListenerReasonUnsupportedProtocol), "protocol is required (HTTP, HTTPS, TCP or TLS)")
	default:
		l.listenerErrorf(o, i, p+".protocol", string(gwapiv1.ListenerReasonUnsupportedProtocol), "unknown protocol %q (want HTTP, HTTPS, TCP or TLS)", ls.Protocol)
	}
	if ls.Hostname != nil {
		if msg := checkHostname(string(*ls.Hostname), true); msg != "" {
			l.listenerErrorf(o, i, p+".hostname", lsInvalid, "invalid hostname %q: %s", *ls.Hostname, msg)
		}
	}
	if protocol {
		switch {
		case ls.Protocol == gwapiv1.HTTPSProtocolType && ls.TLS == nil:
			l.listenerErrorf(o, i, p+".tls", lsInvalid, "tls is required for protocol HTTPS (mode Terminate and certificateRefs)")
		case ls.Protocol == gwapiv1.HTTPSProtocolType:
			l.checkListenerTLS(o, i, p+".tls", ls.TLS)
			l.checkListenerACME(o, i, p, ls)
		case ls.TLS != nil && (ls.Protocol == gwapiv1.HTTPProtocolType || ls.Protocol == gwapiv1.TCPProtocolType):
			l.listenerErrorf(o, i, p+".tls", lsInvalid, "tls is only for protocols HTTPS and TLS")
		case ls.Protocol == gwapiv1.TLSProtocolType:
			l.checkPassthrough(o, i, p, ls)
		}
	}
	l.checkAllowedRoutes(o, i, p+".allowedRoutes", ls.AllowedRoutes)
	if ar := ls.AllowedRoutes; ar != nil && ls.Protocol != "" {
		for j, k := range ar.Kinds {
			if (k.Group == nil || *k.Group == GatewayGroup) && slices.Contains([]string{KindHTTPRoute, KindGRPCRoute, KindTCPRoute, KindTLSRoute}, string(k.Kind)) &&
				!routeKindFits(string(k.Kind), ls.Protocol) {
				l.listenerErrorf(o, i, fmt.Sprintf("%s.allowedRoutes.kinds[%d]", p, j), string(gwapiv1.ListenerReasonInvalidRouteKinds),
					"route kind %s does not attach to a listener of protocol %s (it takes %s)", k.Kind, ls.Protocol, listenerRouteKind(ls.Protocol))
			}
		}
	}
}

// listenerHostnameOf is the hostname of a listener as written, "" when
// it has none.
func listenerHostnameOf(ls *gwapiv1.Listener) string {
	if ls.Hostname == nil {
		return ""
	}
	return string(*ls.Hostname)
}

func describeHostname(h string) string {
	if h == "" {
		return "no hostname"
	}
	return fmt.Sprintf("hostname %q", h)
}

// lsInvalid is the reason of a listener whose configuration is invalid.
const lsInvalid = string(gwapiv1.ListenerReasonUnsupportedValue)

func (l *loader) checkAllowedRoutes(g listenerOwner, i int, p string, ar *gwapiv1.AllowedRoutes) {
	if ar == nil {
		return
	}
	if ns := ar.Namespaces; ns != nil {
		if ns.From != nil {
			switch *ns.From {
			case gwapiv1.NamespacesFromSame, gwapiv1.NamespacesFromAll, gwapiv1.NamespacesFromNone:
			case gwapiv1.NamespacesFromSelector:
				if ns.Selector == nil {
					l.listenerErrorf(g, i, p+".namespaces.selector", lsInvalid, "selector is required when from is Selector")
				}
			default:
				l.listenerErrorf(g, i, p+".namespaces.from", lsInvalid, "unknown value %q (want Same, All, Selector or None)", *ns.From)
			}
		}
		if ns.Selector != nil {
			if _, err := metav1.LabelSelectorAsSelector(ns.Selector); err != nil {
				l.listenerErrorf(g, i, p+".namespaces.selector", lsInvalid, "invalid selector: %v", err)
			}
		}
	}
	for j, k := range ar.Kinds {
		group := GatewayGroup
		if k.Group != nil {
			group = string(*k.Group)
		}
		if group != GatewayGroup || (k.Kind != KindHTTPRoute && k.Kind != KindGRPCRoute && k.Kind != KindTCPRoute && k.Kind != KindTLSRoute) {
			l.listenerErrorf(g, i, fmt.Sprintf("%s.kinds[%d]", p, j), string(gwapiv1.ListenerReasonInvalidRouteKinds), "route kind %q in group %q is not supported yet (only HTTPRoute, GRPCRoute, TCPRoute and TLSRoute)", k.Kind, group)
		}
	}
}

// allowedFrom is a listener's allowedRoutes.namespaces.from, Same when
// unset.
func allowedFrom(ls *gwapiv1.Listener) gwapiv1.FromNamespaces {
	if ar := ls.AllowedRoutes; ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		return *ar.Namespaces.From
	}
	return gwapiv1.NamespacesFromSame
}

// checkGatewayAddresses checks a Gateway's spec.addresses: IP addresses
// (type IPAddress, the default), each listener is served on each. Another
// type (Hostname, a named address) is not supported: the Gateway is not
// accepted (reason UnsupportedAddress), as the Gateway API specifies.
func (l *loader) checkGatewayAddresses(g *Gateway) {
	src := g.Source
	seen := map[netip.Addr]int{}
	var unspecified []int
	for i, a := range g.Spec.Addresses {
		p := fmt.Sprintf("spec.addresses[%d]", i)
		if a.Type != nil && *a.Type != gwapiv1.IPAddressType {
			l.classifiedf(src, p+".type", attribution{class: classInvalid, reason: string(gwapiv1.GatewayReasonUnsupportedAddress)},
				"address type %q is not supported: a gateway node binds IP addresses (type IPAddress); resolve the name and write its addresses", *a.Type)
			continue
		}
		if a.Value == "" {
			l.errorf(src, p+".value", "value is required (an IP address to bind)")
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || ip.Zone() != "" {
			l.errorf(src, p+".value", "%q is not a valid IP address", a.Value)
			continue
		}
		if j, dup := seen[ip]; dup {
			l.errorf(src, p+".value", "address %s is already spec.addresses[%d]", ip, j)
			continue
		}
		seen[ip] = i
		if ip.IsUnspecified() {
			unspecified = append(unspecified, i)
		}
	}
	if len(unspecified) > 0 && len(seen) > 1 {
		i := unspecified[0]
		l.errorf(src, fmt.Sprintf("spec.addresses[%d].value", i),
			"%s binds every address of the host: it cannot be listed with other addresses (list it alone, or list the addresses to serve)",
			g.Spec.Addresses[i].Value)
	}
}

// checkBindConflicts reports Gateways whose listeners would bind the same
// address and port. An unspecified address (0.0.0.0, ::) conflicts with
// every address on that port.
func (l *loader) checkBindConflicts(gateways []*Gateway) {
	type binding struct {
		addr netip.Addr
		port int32
		gw   *Gateway
		ls   string
		line int
	}
	ordered := slices.Clone(gateways)
	slices.SortStableFunc(ordered, func(a, b *Gateway) int {
		return cmp.Or(cmp.Compare(a.Source.File, b.Source.File), cmp.Compare(a.Source.Line, b.Source.Line))
	})
	var taken []binding
	for _, g := range ordered {
		var addrs []netip.Addr
		for _, a := range g.BindAddresses() {
			if addr, err := netip.ParseAddr(a); err == nil {
				addrs = append(addrs, addr)
			}
		}
		ports := make(map[int32]bool)
		var mine []binding
		for i, ls := range g.Spec.Listeners {
			if ports[ls.Port] || ls.Port < 1 || ls.Port > 65535 {
				continue
			}
			ports[ls.Port] = true
			p := fmt.Sprintf("spec.listeners[%d].port", i)
		addresses:
			for _, addr := range addrs {
				for _, t := range taken {
					if t.port != ls.Port || (t.addr != addr && !t.addr.IsUnspecified() && !addr.IsUnspecified()) {
						continue
					}
					l.listenerErrorf(g, i, p, string(gwapiv1.ListenerReasonPortUnavailable), "Gateway %q listener %q binds %s, already bound by Gateway %q listener %q (%s:%d)",
						g.Namespace+"/"+g.Name, ls.Name, netip.AddrPortFrom(addr, uint16(ls.Port)),
						t.gw.Namespace+"/"+t.gw.Name, t.ls, t.gw.Source.File, t.line)
					break addresses
				}
				mine = append(mine, binding{addr: addr, port: ls.Port, gw: g, ls: string(ls.Name), line: g.Source.LineOf(p)})
			}
		}
		taken = append(taken, mine...) // a Gateway's own addresses do not conflict with each other
	}
}

// ---- HTTPRoute ----

func (l *loader) checkHTTPRoute(r *HTTPRoute, ix *setIndex) {
	services := ix.services
	src, spec := r.Source, &r.Spec
	// A route without parentRefs is valid (the field is optional): it is
	// attached nowhere, as its status says.
	for i := range spec.ParentRefs {
		l.checkParentRef(r, i, ix)
	}
	if spec.UseDefaultGateways != "" {
		l.errorf(src, "spec.useDefaultGateways", "%s", notSupported("useDefaultGateways"))
	}
	l.checkRouteTracing(r)
	for i, h := range spec.Hostnames {
		if msg := checkHostname(string(h), true); msg != "" {
			l.errorf(src, fmt.Sprintf("spec.hostnames[%d]", i), "invalid hostname %q: %s", h, msg)
		}
	}
	ruleNames := make(map[gwapiv1.SectionName]int)
	for i := range spec.Rules {
		rule := &spec.Rules[i]
		p := fmt.Sprintf("spec.rules[%d]", i)
		if rule.Name != nil {
			if msg := checkSubdomain(string(*rule.Name)); msg != "" {
				l.errorf(src, p+".name", "invalid rule name %q: %s", *rule.Name, msg)
			} else if j, dup := ruleNames[*rule.Name]; dup {
				l.errorf(src, p+".name", "duplicate rule name %q (also spec.rules[%d])", *rule.Name, j)
			} else {
				ruleNames[*rule.Name] = i
			}
		}
		l.checkRule(r, p, rule, services)
	}
}

func (l *loader) checkParentRef(r *HTTPRoute, i int, ix *setIndex) {
	gateways, services := ix.gateways, ix.services
	src, pr := r.Source, &r.Spec.ParentRefs[i]
	p := fmt.Sprintf("spec.parentRefs[%d]", i)
	group, kind := GatewayGroup, KindGateway
	if pr.Group != nil {
		group = string(*pr.Group)
	}
	if pr.Kind != nil {
		kind = string(*pr.Kind)
	}
	ns := r.Namespace
	if pr.Namespace != nil && *pr.Namespace != "" {
		ns = string(*pr.Namespace)
	}
	if pr.Name == "" {
		l.errorf(src, p+".name", "name is required")
		return
	}
	noParent := string(gwapiv1.RouteReasonNoMatchingParent)
	switch {
	case kind == KindGateway && group == GatewayGroup:
		g := gateways[nsName{ns, string(pr.Name)}]
		if why, ok := l.pass.ignored[resourceKey{KindGateway, ns, string(pr.Name)}]; g == nil && ok {
			// Not meshgate's Gateway: its controller writes this
			// parent's status. Not an error of the files.
			l.classifiedf(src, p+".name", attribution{class: classParent, index: i, reason: noParent, cascade: true},
				"gateway %s is not served by meshgate: %s", refName(ns, string(pr.Name), r.Namespace), why)
			return
		}
		if g == nil {
			l.parentErrorf(src, i, p+".name", noParent, "gateway %s not found%s", refName(ns, string(pr.Name), r.Namespace),
				l.rejectedNote(KindGateway, ns, string(pr.Name)))
			return
		}
		l.checkListenerAttachment(r, i, p, pr, g, func(ls *gwapiv1.Listener, routeNamespace string) bool {
			return l.set.ListenerAllows(g, ls, routeNamespace)
		})
	case kind == KindListenerSet && group == GatewayGroup:
		l.checkListenerSetParentRef(r, i, p, ns, pr, ix)
	case kind == KindService && group == coreGroupAlias:
		l.warnCoreGroup(src, p+".group")
		fallthrough
	case kind == KindService && (pr.Group == nil || group == "" || group == MeshgateGroup || group == coreGroupAlias):
		svc := services[nsName{ns, string(pr.Name)}]
		if svc == nil {
			l.parentErrorf(src, i, p+".name", noParent, "service %s not found%s", refName(ns, string(pr.Name), r.Namespace),
				l.rejectedNote(KindService, ns, string(pr.Name)))
			return
		}
		if pr.Port != nil && svc.LookupPort(strconv.Itoa(int(*pr.Port))) == nil {
			l.parentErrorf(src, i, p+".port", noParent, "service %s has no port %d", refName(ns, svc.Name, r.Namespace), *pr.Port)
			return
		}
		if pr.SectionName != nil {
			// GAMMA: a Service parent's sectionName names one of its ports.
			j := slices.IndexFunc(svc.Spec.Ports, func(sp ServicePort) bool { return sp.Name == string(*pr.SectionName) })
			switch {
			case j < 0:
				l.parentErrorf(src, i, p+".sectionName", noParent, "service %s has no port named %q", refName(ns, svc.Name, r.Namespace), *pr.SectionName)
			case pr.Port != nil && svc.Spec.Ports[j].Port != int32(*pr.Port):
				l.parentErrorf(src, i, p+".sectionName", noParent, "port %q of service %s is not port %d", *pr.SectionName, refName(ns, svc.Name, r.Namespace), *pr.Port)
			}
		}
	case kind == "ServiceImport" && group == multiclusterGroup:
		l.parentErrorf(src, i, p+".kind", string(gwapiv1.RouteReasonUnsupportedValue),
			"parent kind ServiceImport (%s): multi-cluster services are not part of meshgate; the route is not attached to this parent", group)
	default:
		l.parentErrorf(src, i, p+".kind", string(gwapiv1.RouteReasonUnsupportedValue), "parent kind %q in group %q is not supported (want Gateway or ListenerSet, or Service for mesh routes)", kind, group)
	}
}

// checkListenerAttachment checks that the parentRef parent of r selects
// listeners of o (a Gateway, or a ListenerSet) that accept the route
// (allows: by their allowedRoutes), and counts the route as attached to
// each of them (ListenerStatus.attachedRoutes). A listener that is not
// programmed (its problem is reported on o) selects nothing.
func (l *loader) checkListenerAttachment(r *HTTPRoute, parent int, p string, pr *gwapiv1.ParentReference, o listenerOwner,
	allows func(ls *gwapiv1.Listener, routeNamespace string) bool) {
	src := r.Source
	gwName := o.describe(r.Namespace)
	listeners := o.ownerListeners()
	noParent := string(gwapiv1.RouteReasonNoMatchingParent)
	var selected []int
	named, bad := false, false
	for i := range listeners {
		ls := &listeners[i]
		if pr.SectionName != nil {
			if ls.Name != *pr.SectionName {
				continue
			}
			named = true
		}
		if pr.Port != nil && ls.Port != *pr.Port {
			continue
		}
		if l.pass.badListeners[o][i] {
			bad = true
			continue
		}
		selected = append(selected, i)
	}
	if len(selected) == 0 {
		oSrc := o.source()
		switch {
		case bad:
			// Follows from the listener's own problem, reported on the
			// Gateway (or ListenerSet): a status, not another error.
			l.classifiedf(src, p, attribution{class: classParent, index: parent, reason: noParent, cascade: true},
				"the listeners of %s this parentRef selects are not programmed (see its status, %s:%d)", gwName, oSrc.File, oSrc.Line)
		case pr.SectionName != nil && !named:
			l.parentErrorf(src, parent, p+".sectionName", noParent, "%s has no listener %q", gwName, *pr.SectionName)
		case pr.SectionName != nil:
			l.parentErrorf(src, parent, p+".port", noParent, "listener %q of %s is not on port %d", *pr.SectionName, gwName, *pr.Port)
		case pr.Port != nil:
			l.parentErrorf(src, parent, p+".port", noParent, "%s has no listener on port %d", gwName, *pr.Port)
		default: // no listeners at all
			l.parentErrorf(src, parent, p, noParent, "%s has no listeners", gwName)
		}
		return
	}
	selected = slices.DeleteFunc(selected, func(i int) bool { return !routeKindFits(r.RouteKind(), listeners[i].Protocol) })
	if len(selected) == 0 {
		l.parentErrorf(src, parent, p, string(gwapiv1.RouteReasonNotAllowedByListeners), "the listeners of %s this parentRef selects do not take %ss (their protocol is not %s)",
			gwName, r.RouteKind(), map[string]string{KindHTTPRoute: "HTTP or HTTPS", KindTCPRoute: "TCP", KindTLSRoute: "TLS"}[r.RouteKind()])
		return
	}
	from := allowedFrom(&listeners[selected[0]])
	if kinds := slices.DeleteFunc(slices.Clone(selected), func(i int) bool { return !ListenerAllowsKind(&listeners[i], r.RouteKind()) }); len(kinds) == 0 {
		l.parentErrorf(src, parent, p, string(gwapiv1.RouteReasonNotAllowedByListeners), "%s does not accept routes of kind %s (allowedRoutes.kinds)", gwName, r.RouteKind())
		return
	} else {
		selected = kinds
	}
	selected = slices.DeleteFunc(selected, func(i int) bool { return !allows(&listeners[i], r.Namespace) })
	if len(selected) == 0 {
		l.parentErrorf(src, parent, p, string(gwapiv1.RouteReasonNotAllowedByListeners), "%s does not accept routes from namespace %q (allowedRoutes.namespaces.from is %s)", gwName, r.Namespace, from)
		return
	}
	if len(r.Spec.Hostnames) > 0 {
		selected = slices.DeleteFunc(selected, func(i int) bool {
			ls := &listeners[i]
			if ls.Hostname == nil {
				return false
			}
			return !slices.ContainsFunc(r.Spec.Hostnames, func(h gwapiv1.Hostname) bool {
				return hostnamesIntersect(string(*ls.Hostname), string(h))
			})
		})
		if len(selected) == 0 {
			l.parentErrorf(src, parent, "spec.hostnames", string(gwapiv1.RouteReasonNoMatchingListenerHostname), "no hostname of the route matches a listener of %s", gwName)
			return
		}
	}
	l.attach(o, len(listeners), selected)
}

// attach counts a route as attached to listeners of o (which has n), once
// per listener.
func (l *loader) attach(o listenerOwner, n int, listeners []int) {
	if l.pass.attached == nil {
		l.pass.attached = make(map[listenerOwner][]int32)
	}
	counts := l.pass.attached[o]
	if counts == nil {
		counts = make([]int32, n)
		l.pass.attached[o] = counts
	}
	for _, i := range listeners {
		counts[i]++
	}
}

// rejectedNote says, in a message about a reference that does not resolve,
// that the resource it names is rejected (it is defined, but invalid), or "".
func (l *loader) rejectedNote(kind, namespace, name string) string {
	if src, ok := l.pass.rejected[resourceKey{kind, namespace, name}]; ok {
		return fmt.Sprintf(" (it is rejected: see %s:%d)", src.File, src.Line)
	}
	return ""
}

func (l *loader) checkRule(r *HTTPRoute, p string, rule *gwapiv1.HTTPRouteRule, services map[nsName]*Service) {
	src := r.Source
	allPrefix := true
	for j := range rule.Matches {
		if !l.checkMatch(src, fmt.Sprintf("%s.matches[%d]", p, j), &rule.Matches[j]) {
			allPrefix = false
		}
	}
	seenTypes := make(map[gwapiv1.HTTPRouteFilterType]bool)
	redirect, rewrite := -1, -1
	for k := range rule.Filters {
		f := &rule.Filters[k]
		fp := fmt.Sprintf("%s.filters[%d]", p, k)
		if seenTypes[f.Type] && f.Type != gwapiv1.HTTPRouteFilterRequestMirror {
			l.errorf(src, fp+".type", "duplicate %s filter in one rule", f.Type)
		}
		seenTypes[f.Type] = true
		usesPrefix := l.checkFilter(src, fp, f)
		if f.Type == gwapiv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
			l.checkMirror(r, fp+".requestMirror", f.RequestMirror, services)
		}
		if f.Type == gwapiv1.HTTPRouteFilterExternalAuth && f.ExternalAuth != nil {
			l.checkExternalAuth(r, fp+".externalAuth", f.ExternalAuth, services)
		}
		if usesPrefix != "" && !allPrefix {
			l.errorf(src, usesPrefix, "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
		}
		switch f.Type {
		case gwapiv1.HTTPRouteFilterRequestRedirect:
			redirect = k
		case gwapiv1.HTTPRouteFilterURLRewrite:
			rewrite = k
		}
	}
	if redirect >= 0 && len(rule.BackendRefs) > 0 {
		l.errorf(src, fmt.Sprintf("%s.filters[%d]", p, redirect), "a rule cannot have both a RequestRedirect filter and backendRefs")
	}
	if redirect >= 0 && rewrite >= 0 {
		l.errorf(src, fmt.Sprintf("%s.filters[%d]", p, max(redirect, rewrite)), "a rule cannot have both RequestRedirect and URLRewrite filters")
	}
	for k := range rule.BackendRefs {
		l.checkBackendRef(r, fmt.Sprintf("%s.backendRefs[%d]", p, k), &rule.BackendRefs[k], services)
	}
	if t := rule.Timeouts; t != nil {
		var request, backendRequest time.Duration
		var requestErr, backendErr error
		if t.Request != nil {
			if request, requestErr = ParseDuration(*t.Request); requestErr != nil {
				l.errorf(src, p+".timeouts.request", "%v", requestErr)
			}
		}
		if t.BackendRequest != nil {
			if backendRequest, backendErr = ParseDuration(*t.BackendRequest); backendErr != nil {
				l.errorf(src, p+".timeouts.backendRequest", "%v", backendErr)
			}
		}
		if t.Request != nil && t.BackendRequest != nil && requestErr == nil && backendErr == nil &&
			request != 0 && backendRequest > request {
			l.errorf(src, p+".timeouts.backendRequest", "backendRequest timeout %s cannot be longer than the request timeout %s", *t.BackendRequest, *t.Request)
		}
	}
	if rule.Retry != nil {
		l.checkRetry(src, p+".retry", rule.Retry)
	}
	if rule.SessionPersistence != nil {
		l.errorf(src, p+".sessionPersistence", "%s", notSupported("sessionPersistence"))
	}
}

// Bounds of a rule's retry stanza: the Gateway API's (status codes 400-599,
// at least one attempt) and meshgate's own, so that a typo cannot make one
// request into thousands (maxRetryAttempts) or hold it for hours
// (maxRetryBackoff).
const (
	maxRetryAttempts = 10
	maxRetryBackoff  = time.Minute
)

// checkRetry validates a rule's retry stanza.
func (l *loader) checkRetry(src Source, p string, r *gwapiv1.HTTPRouteRetry) {
	seen := make(map[gwapiv1.HTTPRouteRetryStatusCode]bool, len(r.Codes))
	for i, c := range r.Codes {
		cp := fmt.Sprintf("%s.codes[%d]", p, i)
		switch {
		case c < 400 || c > 599:
			l.errorf(src, cp, "status code %d is out of range 400-599", c)
		case seen[c]:
			l.errorf(src, cp, "duplicate status code %d", c)
		}
		seen[c] = true
	}
	if r.Attempts != nil && (*r.Attempts < 1 || *r.Attempts > maxRetryAttempts) {
		l.errorf(src, p+".attempts", "attempts %d is out of range 1-%d", *r.Attempts, maxRetryAttempts)
	}
	if r.Backoff != nil {
		d, err := ParseDuration(*r.Backoff)
		switch {
		case err != nil:
			l.errorf(src, p+".backoff", "%v", err)
		case d > maxRetryBackoff:
			l.errorf(src, p+".backoff", "backoff %s is too long (at most %s)", *r.Backoff, maxRetryBackoff)
		}
	}
}

// checkMirror validates a RequestMirror filter: its backendRef resolves as
// a rule's does, and its share of the requests is a fraction at most 1.
func (l *loader) checkMirror(r *HTTPRoute, p string, m *gwapiv1.HTTPRequestMirrorFilter, services map[nsName]*Service) {
	src := r.Source
	ref := gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: m.BackendRef}}
	l.checkBackendRef(r, p+".backendRef", &ref, services)
	if m.Percent != nil && m.Fraction != nil {
		l.errorf(src, p+".fraction", "only one of percent and fraction may be set")
	}
	if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
		l.errorf(src, p+".percent", "percent %d is out of range 0-100", *m.Percent)
	}
	if f := m.Fraction; f != nil {
		denominator := int32(100)
		if f.Denominator != nil {
			denominator = *f.Denominator
		}
		switch {
		case denominator < 1:
			l.errorf(src, p+".fraction.denominator", "denominator %d must be at least 1", denominator)
		case f.Numerator < 0 || f.Numerator > denominator:
			l.errorf(src, p+".fraction.numerator", "numerator %d is out of range 0-%d (the denominator)", f.Numerator, denominator)
		}
	}
}

// checkMatch validates one match and reports whether it is a PathPrefix
// match (the default).
func (l *loader) checkMatch(src Source, p string, m *gwapiv1.HTTPRouteMatch) (prefix bool) {
	prefix = true
	if m.Path != nil {
		typ := gwapiv1.PathMatchPathPrefix
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		value := "/"
		if m.Path.Value != nil {
			value = *m.Path.Value
		}
		prefix = typ == gwapiv1.PathMatchPathPrefix
		switch typ {
		case gwapiv1.PathMatchExact, gwapiv1.PathMatchPathPrefix:
			if msg := checkMatchPath(value); msg != "" {
				l.errorf(src, p+".path.value", "%s", msg)
			}
		case gwapiv1.PathMatchRegularExpression:
			if msg := checkRegexp(value); msg != "" {
				l.errorf(src, p+".path.value", "%s", msg)
			}
		default:
			l.errorf(src, p+".path.type", "unknown path match type %q (want Exact, PathPrefix or RegularExpression)", typ)
		}
	}
	headers := make(map[string]bool)
	for i, h := range m.Headers {
		hp := fmt.Sprintf("%s.headers[%d]", p, i)
		typ := gwapiv1.HeaderMatchExact
		if h.Type != nil {
			typ = *h.Type
		}
		l.checkValueMatch(src, hp, string(h.Name), string(typ), h.Value, headers, true)
	}
	params := make(map[string]bool)
	for i, q := range m.QueryParams {
		qp := fmt.Sprintf("%s.queryParams[%d]", p, i)
		typ := gwapiv1.QueryParamMatchExact
		if q.Type != nil {
			typ = *q.Type
		}
		l.checkValueMatch(src, qp, string(q.Name), string(typ), q.Value, params, false)
	}
	if m.Method != nil {
		switch *m.Method {
		case gwapiv1.HTTPMethodGet, gwapiv1.HTTPMethodHead, gwapiv1.HTTPMethodPost, gwapiv1.HTTPMethodPut,
			gwapiv1.HTTPMethodDelete, gwapiv1.HTTPMethodConnect, gwapiv1.HTTPMethodOptions,
			gwapiv1.HTTPMethodTrace, gwapiv1.HTTPMethodPatch:
		default:
			l.errorf(src, p+".method", "unknown method %q (want GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH)", *m.Method)
		}
	}
	return prefix
}

// checkValueMatch validates a header or query parameter match.
func (l *loader) checkValueMatch(src Source, p, name, typ, value string, seen map[string]bool, foldCase bool) {
	if msg := checkHeaderName(name); msg != "" {
		l.errorf(src, p+".name", "%s", msg)
	} else {
		key := name
		if foldCase {
			key = strings.ToLower(name)
		}
		if seen[key] {
			l.errorf(src, p+".name", "duplicate match on %q", name)
		}
		seen[key] = true
	}
	switch typ {
	case "Exact":
	case "RegularExpression":
		if msg := checkRegexp(value); msg != "" {
			l.errorf(src, p+".value", "%s", msg)
		}
	default:
		l.errorf(src, p+".type", "unknown match type %q (want Exact or RegularExpression)", typ)
	}
}

// checkFilter validates one route filter. It returns the path of its
// replacePrefixMatch field when the filter uses one, or "".
func (l *loader) checkFilter(src Source, p string, f *gwapiv1.HTTPRouteFilter) (prefixField string) {
	configs := []struct {
		field string
		typ   gwapiv1.HTTPRouteFilterType
		set   bool
	}{
		{"requestHeaderModifier", gwapiv1.HTTPRouteFilterRequestHeaderModifier, f.RequestHeaderModifier != nil},
		{"responseHeaderModifier", gwapiv1.HTTPRouteFilterResponseHeaderModifier, f.ResponseHeaderModifier != nil},
		{"requestRedirect", gwapiv1.HTTPRouteFilterRequestRedirect, f.RequestRedirect != nil},
		{"urlRewrite", gwapiv1.HTTPRouteFilterURLRewrite, f.URLRewrite != nil},
		{"requestMirror", gwapiv1.HTTPRouteFilterRequestMirror, f.RequestMirror != nil},
		{"cors", gwapiv1.HTTPRouteFilterCORS, f.CORS != nil},
		{"externalAuth", gwapiv1.HTTPRouteFilterExternalAuth, f.ExternalAuth != nil},
		{"extensionRef", gwapiv1.HTTPRouteFilterExtensionRef, f.ExtensionRef != nil},
	}
	switch f.Type {
	case "":
		l.errorf(src, p+".type", "type is required")
		return ""
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier, gwapiv1.HTTPRouteFilterResponseHeaderModifier,
		gwapiv1.HTTPRouteFilterRequestRedirect, gwapiv1.HTTPRouteFilterURLRewrite, gwapiv1.HTTPRouteFilterRequestMirror,
		gwapiv1.HTTPRouteFilterCORS, gwapiv1.HTTPRouteFilterExternalAuth:
	case gwapiv1.HTTPRouteFilterExtensionRef:
		l.errorf(src, p+".type", "filter %s is not supported yet", f.Type)
		return ""
	default:
		l.errorf(src, p+".type", "unknown filter type %q", f.Type)
		return ""
	}
	for _, c := range configs {
		switch {
		case c.typ == f.Type && !c.set:
			l.errorf(src, p+"."+c.field, "%s is required when type is %s", c.field, f.Type)
			return ""
		case c.typ != f.Type && c.set:
			l.errorf(src, p+"."+c.field, "%s must not be set when type is %s", c.field, f.Type)
		}
	}
	switch f.Type {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
		l.checkHeaderFilter(src, p+".requestHeaderModifier", f.RequestHeaderModifier, true)
	case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
		l.checkHeaderFilter(src, p+".responseHeaderModifier", f.ResponseHeaderModifier, false)
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		rp, rd := p+".requestRedirect", f.RequestRedirect
		if rd.Scheme != nil && *rd.Scheme != "http" && *rd.Scheme != "https" {
			l.errorf(src, rp+".scheme", "unknown scheme %q (want http or https)", *rd.Scheme)
		}
		if rd.Hostname != nil {
			if msg := checkHostname(string(*rd.Hostname), false); msg != "" {
				l.errorf(src, rp+".hostname", "invalid hostname %q: %s", *rd.Hostname, msg)
			}
		}
		if rd.Port != nil && (*rd.Port < 1 || *rd.Port > 65535) {
			l.errorf(src, rp+".port", "port %d is out of range 1-65535", *rd.Port)
		}
		if rd.StatusCode != nil && !slices.Contains([]int{301, 302, 303, 307, 308}, *rd.StatusCode) {
			l.errorf(src, rp+".statusCode", "status code %d is not a redirect (want 301, 302, 303, 307 or 308)", *rd.StatusCode)
		}
		return l.checkPathModifier(src, rp+".path", rd.Path)
	case gwapiv1.HTTPRouteFilterCORS:
		l.checkCORS(src, p+".cors", f.CORS)
	case gwapiv1.HTTPRouteFilterURLRewrite:
		rp, rw := p+".urlRewrite", f.URLRewrite
		if rw.Hostname != nil {
			if msg := checkHostname(string(*rw.Hostname), false); msg != "" {
				l.errorf(src, rp+".hostname", "invalid hostname %q: %s", *rw.Hostname, msg)
			}
		}
		return l.checkPathModifier(src, rp+".path", rw.Path)
	}
	return ""
}

func (l *loader) checkHeaderFilter(src Source, p string, hf *gwapiv1.HTTPHeaderFilter, request bool) {
	check := func(list string, names []string) {
		seen := make(map[string]bool, len(names))
		for i, name := range names {
			np := fmt.Sprintf("%s.%s[%d]", p, list, i)
			if list != "remove" {
				np += ".name"
			}
			if msg := checkHeaderName(name); msg != "" {
				l.errorf(src, np, "%s", msg)
				continue
			}
			if why := proxyOwnedHeader(name, request); why != "" {
				l.errorf(src, np, "header %q cannot be modified: %s", name, why)
				continue
			}
			if seen[strings.ToLower(name)] {
				l.errorf(src, np, "duplicate header %q", name)
			}
			seen[strings.ToLower(name)] = true
		}
	}
	headerNames := func(hs []gwapiv1.HTTPHeader) []string {
		out := make([]string, len(hs))
		for i, h := range hs {
			out[i] = string(h.Name)
		}
		return out
	}
	check("set", headerNames(hf.Set))
	check("add", headerNames(hf.Add))
	check("remove", hf.Remove)
}

// proxyOwnedHeader returns why the proxy owns a header that a header
// modifier filter would change (on requests, or responses), or "": the
// hop-by-hop headers and the message framing (the proxy writes them per
// connection), and on requests the Host (a URLRewrite's hostname sets it)
// and the X-Forwarded-For and X-Forwarded-Proto the proxy sets as it
// forwards.
func proxyOwnedHeader(name string, request bool) string {
	switch strings.ToLower(name) {
	case "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
		"proxy-authorization", "proxy-authenticate":
		return "it is hop-by-hop, written by the proxy per connection"
	case "content-length":
		return "it frames the message, written by the proxy"
	case "host":
		if request {
			return "use a URLRewrite filter's hostname"
		}
	case "x-forwarded-for", "x-forwarded-proto":
		if request {
			return "the proxy sets it when it forwards the request"
		}
	}
	return ""
}

// checkPathModifier validates a redirect or rewrite path. It returns the
// path of the replacePrefixMatch field when that is the type, or "".
func (l *loader) checkPathModifier(src Source, p string, pm *gwapiv1.HTTPPathModifier) string {
	if pm == nil {
		return ""
	}
	switch pm.Type {
	case gwapiv1.FullPathHTTPPathModifier:
		if pm.ReplacePrefixMatch != nil {
			l.errorf(src, p+".replacePrefixMatch", "replacePrefixMatch must not be set when type is ReplaceFullPath")
		}
		switch {
		case pm.ReplaceFullPath == nil:
			l.errorf(src, p+".replaceFullPath", "replaceFullPath is required when type is ReplaceFullPath")
		case !strings.HasPrefix(*pm.ReplaceFullPath, "/"):
			l.errorf(src, p+".replaceFullPath", "path %q must start with \"/\"", *pm.ReplaceFullPath)
		}
	case gwapiv1.PrefixMatchHTTPPathModifier:
		if pm.ReplaceFullPath != nil {
			l.errorf(src, p+".replaceFullPath", "replaceFullPath must not be set when type is ReplacePrefixMatch")
		}
		switch {
		case pm.ReplacePrefixMatch == nil:
			l.errorf(src, p+".replacePrefixMatch", "replacePrefixMatch is required when type is ReplacePrefixMatch")
		case *pm.ReplacePrefixMatch != "" && !strings.HasPrefix(*pm.ReplacePrefixMatch, "/"):
			l.errorf(src, p+".replacePrefixMatch", "path %q must start with \"/\"", *pm.ReplacePrefixMatch)
		default:
			return p + ".replacePrefixMatch"
		}
	case "":
		l.errorf(src, p+".type", "type is required (ReplaceFullPath or ReplacePrefixMatch)")
	default:
		l.errorf(src, p+".type", "unknown path modifier type %q (want ReplaceFullPath or ReplacePrefixMatch)", pm.Type)
	}
	return ""
}

// coreGroupAlias is "core", which documents often write for the core API
// group (whose name is ""): tolerated on a Service reference, with a
// warning.
const coreGroupAlias = "core"

// multiclusterGroup is the Multi-Cluster Services API's group (ServiceImport).
const multiclusterGroup = "multicluster.x-k8s.io"

// warnCoreGroup warns of group: core on a Service reference.
func (l *loader) warnCoreGroup(src Source, field string) {
	l.warnings = append(l.warnings, &Error{File: src.File, Line: src.LineOf(field), Field: field,
		Message: `group "core" is not the name of the core API group (it is ""): read as "" for this Service`})
}

// maxBackendWeight is the Gateway API's upper bound for backendRef weights.
const maxBackendWeight = 1_000_000

func (l *loader) checkBackendRef(r *HTTPRoute, p string, br *gwapiv1.HTTPBackendRef, services map[nsName]*Service) {
	src := r.Source
	group, kind := "", KindService
	if br.Group != nil {
		group = string(*br.Group)
	}
	if br.Kind != nil {
		kind = string(*br.Kind)
	}
	if br.Weight != nil && (*br.Weight < 0 || *br.Weight > maxBackendWeight) {
		l.errorf(src, p+".weight", "weight %d is out of range 0-%d", *br.Weight, maxBackendWeight)
	}
	seenFilters := make(map[gwapiv1.HTTPRouteFilterType]bool, len(br.Filters))
	for i := range br.Filters {
		f := &br.Filters[i]
		fp := fmt.Sprintf("%s.filters[%d]", p, i)
		switch f.Type {
		case gwapiv1.HTTPRouteFilterRequestHeaderModifier, gwapiv1.HTTPRouteFilterResponseHeaderModifier:
			if seenFilters[f.Type] {
				l.errorf(src, fp+".type", "duplicate %s filter in one backendRef", f.Type)
			}
			seenFilters[f.Type] = true
			l.checkFilter(src, fp, f)
		default:
			l.errorf(src, fp+".type", "backendRef filter %s is not supported yet (only RequestHeaderModifier and ResponseHeaderModifier; put other filters on the rule)", f.Type)
		}
	}
	if kind == KindService && group == coreGroupAlias {
		l.warnCoreGroup(src, p+".group")
		group = ""
	}
	if kind != KindService || (group != "" && group != MeshgateGroup) {
		l.refErrorf(src, p+".kind", string(gwapiv1.RouteReasonInvalidKind), "backend kind %q in group %q is not supported (want Service)", kind, group)
		return
	}
	if br.Name == "" {
		l.errorf(src, p+".name", "name is required")
		return
	}
	ns := r.Namespace
	if br.Namespace != nil && *br.Namespace != "" {
		ns = string(*br.Namespace)
	}
	svc := services[nsName{ns, string(br.Name)}]
	if svc == nil {
		l.refErrorf(src, p+".name", string(gwapiv1.RouteReasonBackendNotFound), "service %s not found%s", refName(ns, string(br.Name), r.Namespace),
			l.rejectedNote(KindService, ns, string(br.Name)))
		return
	}
	if r.GatewayBound() && !l.set.RouteBackendPermitted(r.RouteKind(), r.Namespace, ns, string(br.Name)) {
		l.refErrorf(src, p+".namespace", string(gwapiv1.RouteReasonRefNotPermitted),
			"service %s is in another namespace: it needs a ReferenceGrant in namespace %q from %ss of namespace %q to it",
			refName(ns, string(br.Name), r.Namespace), ns, r.RouteKind(), r.Namespace)
		return
	}
	switch {
	case br.Port == nil && len(svc.Spec.Ports) > 1:
		l.errorf(src, p+".port", "port is required: service %s has %d ports", refName(ns, svc.Name, r.Namespace), len(svc.Spec.Ports))
	case br.Port != nil && svc.LookupPort(strconv.Itoa(int(*br.Port))) == nil:
		l.refErrorf(src, p+".port", string(gwapiv1.RouteReasonBackendNotFound), "service %s has no port %d", refName(ns, svc.Name, r.Namespace), *br.Port)
	}
}

// corsOriginPattern is the pattern of a Gateway API CORSOrigin (v1.6.3):
// "*", or scheme://host[:port] where the host may start with "*." or be
// "*".
var corsOriginPattern = regexp.MustCompile(`^(\*|https?://((\*\.)?([a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+|\*)(:[0-9]{1,5})?)$`)

// Bounds of a CORS filter's lists (the Gateway API's).
const (
	maxCORSOrigins = 64
	maxCORSHeaders = 64
)

// checkCORS validates a CORS filter as the Gateway API v1.6.3 schema does:
// origins of the CORSOrigin pattern, methods of RFC 9110 or "*", header
// names, "*" alone in its list, no duplicates, maxAge at least 1.
func (l *loader) checkCORS(src Source, p string, c *gwapiv1.HTTPCORSFilter) {
	list := func(field string, values []string, limit int, check func(string) string) {
		if len(values) > limit {
			l.errorf(src, p+"."+field, "%d entries: at most %d", len(values), limit)
		}
		seen := make(map[string]bool, len(values))
		for i, v := range values {
			vp := fmt.Sprintf("%s.%s[%d]", p, field, i)
			if msg := check(v); msg != "" {
				l.errorf(src, vp, "%s", msg)
				continue
			}
			key := v
			if field != "allowOrigins" && field != "allowMethods" {
				key = strings.ToLower(v)
			}
			if seen[key] {
				l.errorf(src, vp, "duplicate %q", v)
			}
			seen[key] = true
			if v == "*" && len(values) > 1 && field != "exposeHeaders" {
				l.errorf(src, vp, "%q cannot be listed alongside other values", v)
			}
		}
	}
	origins := make([]string, len(c.AllowOrigins))
	for i, o := range c.AllowOrigins {
		origins[i] = string(o)
	}
	list("allowOrigins", origins, maxCORSOrigins, func(o string) string {
		if len(o) > 253 || !corsOriginPattern.MatchString(o) {
			return fmt.Sprintf("invalid origin %q (want *, or http(s)://host[:port], the host possibly *.domain)", o)
		}
		if _, port, ok := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(o, "https://"), "http://"), ":"); ok {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return fmt.Sprintf("invalid origin %q: port out of range 1-65535", o)
			}
		}
		return ""
	})
	methods := make([]string, len(c.AllowMethods))
	for i, m := range c.AllowMethods {
		methods[i] = string(m)
	}
	list("allowMethods", methods, 9, func(m string) string {
		switch m {
		case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*":
			return ""
		}
		return fmt.Sprintf("unknown method %q (want GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH or *)", m)
	})
	headerNames := func(hs []gwapiv1.HTTPHeaderName) []string {
		out := make([]string, len(hs))
		for i, h := range hs {
			out[i] = string(h)
		}
		return out
	}
	list("allowHeaders", headerNames(c.AllowHeaders), maxCORSHeaders, checkHeaderName)
	list("exposeHeaders", headerNames(c.ExposeHeaders), maxCORSHeaders, checkHeaderName)
	if c.MaxAge < 0 {
		l.errorf(src, p+".maxAge", "%d seconds: want at least 1", c.MaxAge)
	}
}

// maxExternalAuthHeaders bounds the header lists of an ExternalAuth filter
// (the Gateway API's).
const maxExternalAuthHeaders = 64

// externalAuthPathPattern is the pattern of an ExternalAuth filter's
// http.path (the Gateway API's).
var externalAuthPathPattern = regexp.MustCompile(`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`)

// checkExternalAuth validates an ExternalAuth filter as the Gateway API
// v1.6.3 schema does: protocol HTTP with http (or none) and no grpc, GRPC
// with grpc (or none) and no http; the backendRef resolves as a backend's
// does; the path has the pattern of a path value; header lists of at most
// 64 valid names without duplicates (forwardBody.maxSize is a uint16).
func (l *loader) checkExternalAuth(r *HTTPRoute, p string, f *gwapiv1.HTTPExternalAuthFilter, services map[nsName]*Service) {
	l.checkExternalAuthAt(r, p, f, services, externalAuthFields{backendRef: ".backendRef", path: ".http.path",
		requestHeaders: ".http.allowedHeaders", responseHeaders: ".http.allowedResponseHeaders", grpcHeaders: ".grpc.allowedHeaders"})
}

// externalAuthFields are the paths, relative to the section, of the
// fields of an external authorization in the filter or a SecurityPolicy.
type externalAuthFields struct {
	backendRef, path, requestHeaders, responseHeaders, grpcHeaders string
}

func (l *loader) checkExternalAuthAt(r *HTTPRoute, p string, f *gwapiv1.HTTPExternalAuthFilter, services map[nsName]*Service, fields externalAuthFields) {
	src := r.Source
	switch f.ExternalAuthProtocol {
	case gwapiv1.HTTPRouteExternalAuthHTTPProtocol:
		if f.GRPCAuthConfig != nil {
			l.errorf(src, p+".grpc", "protocol must be GRPC when grpc is set")
		}
	case gwapiv1.HTTPRouteExternalAuthGRPCProtocol:
		if f.HTTPAuthConfig != nil {
			l.errorf(src, p+".http", "protocol must be HTTP when http is set")
		}
		l.checkGRPCAuthPort(src, p+fields.backendRef, r.Namespace, f.BackendRef, services)
	case "":
		l.errorf(src, p+".protocol", "protocol is required (HTTP or GRPC)")
	default:
		l.errorf(src, p+".protocol", "unknown protocol %q (want HTTP or GRPC)", f.ExternalAuthProtocol)
	}
	ref := gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{BackendObjectReference: f.BackendRef}}
	l.checkBackendRef(r, p+fields.backendRef, &ref, services)
	headers := func(field string, names []string) {
		if len(names) > maxExternalAuthHeaders {
			l.errorf(src, field, "%d entries: at most %d", len(names), maxExternalAuthHeaders)
		}
		seen := make(map[string]bool, len(names))
		for i, name := range names {
			np := fmt.Sprintf("%s[%d]", field, i)
			if msg := checkHeaderName(name); msg != "" {
				l.errorf(src, np, "%s", msg)
				continue
			}
			if seen[strings.ToLower(name)] {
				l.errorf(src, np, "duplicate %q", name)
			}
			seen[strings.ToLower(name)] = true
		}
	}
	if g := f.GRPCAuthConfig; g != nil {
		headers(p+fields.grpcHeaders, g.AllowedRequestHeaders)
	}
	if h := f.HTTPAuthConfig; h != nil {
		if h.Path != "" && (len(h.Path) > 1024 || !externalAuthPathPattern.MatchString(h.Path)) {
			l.errorf(src, p+fields.path, "invalid path %q (want at most 1024 characters of a path value)", h.Path)
		}
		headers(p+fields.requestHeaders, h.AllowedRequestHeaders)
		headers(p+fields.responseHeaders, h.AllowedResponseHeaders)
	}
}

// checkGRPCAuthPort requires the port of a gRPC authorization service to
// speak HTTP/2 (protocol HTTP2, or appProtocol grpc or kubernetes.io/h2c),
// as gRPC needs; a reference that does not resolve is reported elsewhere.
func (l *loader) checkGRPCAuthPort(src Source, p, namespace string, ref gwapiv1.BackendObjectReference, services map[nsName]*Service) {
	ns := namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	svc := services[nsName{ns, string(ref.Name)}]
	if svc == nil {
		return
	}
	for _, port := range svc.Spec.Ports {
		if (ref.Port == nil && len(svc.Spec.Ports) == 1 || ref.Port != nil && int32(*ref.Port) == port.Port) &&
			port.UpstreamProtocol() != ProtocolHTTP2 {
			l.errorf(src, p, "a GRPC authorization service needs an HTTP/2 port: service %q port %d has protocol %s (want protocol HTTP2 or appProtocol grpc)",
				svc.Name, port.Port, port.UpstreamProtocol())
		}
	}
}
