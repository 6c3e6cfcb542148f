package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ListenerSets (GEP-1713): a ListenerSet adds listeners to its parent
// Gateway when the Gateway's spec.allowedListeners.namespaces admits the
// ListenerSet's namespace (None, the default, admits none). Its listeners
// are the parent's, served by the parent's gateway nodes, after the
// Gateway's own: when two listeners conflict (one port with two protocols,
// or one port, protocol and hostname twice) the Gateway's listener wins,
// then the ListenerSet first by namespace/name (policy files have no
// creation time), and the loser is not programmed (Conflicted=True). A
// route attaches to a ListenerSet's listeners with a parentRef of kind
// ListenerSet, never through its Gateway.

// listenerOwner is what has listeners: a Gateway or a ListenerSet.
type listenerOwner interface {
	source() Source
	// ownerListeners are the listeners, as a Gateway's.
	ownerListeners() []gwapiv1.Listener
	listenerCount() int
	// ownerNamespace is the namespace allowedRoutes Same means.
	ownerNamespace() string
	// describe names the owner in a message about a resource of namespace
	// from: `gateway "name"`, `ListenerSet "ns/name"`.
	describe(from string) string
}

func (g *Gateway) source() Source                     { return g.Source }
func (g *Gateway) ownerListeners() []gwapiv1.Listener { return g.Spec.Listeners }
func (g *Gateway) listenerCount() int                 { return len(g.Spec.Listeners) }
func (g *Gateway) ownerNamespace() string             { return cmp.Or(g.Namespace, DefaultNamespace) }
func (g *Gateway) describe(from string) string {
	return "gateway " + refName(g.Namespace, g.Name, from)
}

func (ls *ListenerSet) source() Source                     { return ls.Source }
func (ls *ListenerSet) ownerListeners() []gwapiv1.Listener { return ls.Listeners() }
func (ls *ListenerSet) listenerCount() int                 { return len(ls.Spec.Listeners) }
func (ls *ListenerSet) ownerNamespace() string             { return cmp.Or(ls.Namespace, DefaultNamespace) }
func (ls *ListenerSet) describe(from string) string {
	return "ListenerSet " + refName(ls.Namespace, ls.Name, from)
}

// Listeners are the listeners of the ListenerSet, as a Gateway's (a
// ListenerEntry has the fields of a Listener).
func (ls *ListenerSet) Listeners() []gwapiv1.Listener {
	out := make([]gwapiv1.Listener, len(ls.Spec.Listeners))
	for i, e := range ls.Spec.Listeners {
		out[i] = gwapiv1.Listener(e)
	}
	return out
}

// ParentGateway is the namespace and name of the Gateway the ListenerSet's
// spec.parentRef names (its namespace defaults to the ListenerSet's).
func (ls *ListenerSet) ParentGateway() (namespace, name string) {
	namespace = ls.Namespace
	if ns := ls.Spec.ParentRef.Namespace; ns != nil && *ns != "" {
		namespace = string(*ns)
	}
	return cmp.Or(namespace, DefaultNamespace), string(ls.Spec.ParentRef.Name)
}

// ListenerSetsOf returns the ListenerSets of the set attached to g, in
// precedence order.
func (s *Set) ListenerSetsOf(g *Gateway) []*ListenerSet {
	var out []*ListenerSet
	for _, ls := range s.ListenerSets {
		ns, name := ls.ParentGateway()
		if ns == cmp.Or(g.Namespace, DefaultNamespace) && name == g.Name {
			out = append(out, ls)
		}
	}
	return out
}

// ListenerSetListenerAllows reports whether a route of routeNamespace may
// attach to the listener l of the ListenerSet ls, by its
// allowedRoutes.namespaces (Same: the ListenerSet's namespace).
func (s *Set) ListenerSetListenerAllows(ls *ListenerSet, l *gwapiv1.Listener, routeNamespace string) bool {
	return s.routesAllowed(ls.ownerNamespace(), l, routeNamespace)
}

// AllowsListenerSets reports whether the Gateway g admits ListenerSets of
// namespace, by its spec.allowedListeners.namespaces: None (the default)
// none, Same its own namespace, All any, Selector those whose labels the
// selector matches.
func (s *Set) AllowsListenerSets(g *Gateway, namespace string) bool {
	namespace = cmp.Or(namespace, DefaultNamespace)
	al := g.Spec.AllowedListeners
	if al == nil || al.Namespaces == nil || al.Namespaces.From == nil {
		return false
	}
	return s.namespaceAdmitted(*al.Namespaces.From, al.Namespaces.Selector, g.ownerNamespace(), namespace)
}

// namespaceAdmitted applies a from (and its selector) of a resource of
// ownerNamespace to a namespace.
func (s *Set) namespaceAdmitted(from gwapiv1.FromNamespaces, selector *metav1.LabelSelector, ownerNamespace, namespace string) bool {
	switch from {
	case gwapiv1.NamespacesFromSame:
		return namespace == ownerNamespace
	case gwapiv1.NamespacesFromAll:
		return true
	case gwapiv1.NamespacesFromSelector:
		if selector == nil {
			return false
		}
		sel, err := metav1.LabelSelectorAsSelector(selector)
		if err != nil {
			return false
		}
		return sel.Matches(labels.Set(s.NamespaceLabels(namespace)))
	}
	return false // None
}

// checkAllowedListeners checks a Gateway's spec.allowedListeners.
func (l *loader) checkAllowedListeners(g *Gateway) {
	al := g.Spec.AllowedListeners
	if al == nil || al.Namespaces == nil {
		return
	}
	p := "spec.allowedListeners.namespaces"
	if from := al.Namespaces.From; from != nil {
		switch *from {
		case gwapiv1.NamespacesFromSame, gwapiv1.NamespacesFromAll, gwapiv1.NamespacesFromNone:
		case gwapiv1.NamespacesFromSelector:
			if al.Namespaces.Selector == nil {
				l.errorf(g.Source, p+".selector", "selector is required when from is Selector")
			}
		default:
			l.errorf(g.Source, p+".from", "unknown value %q (want None, Same, All or Selector)", *from)
		}
	}
	if al.Namespaces.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(al.Namespaces.Selector); err != nil {
			l.errorf(g.Source, p+".selector", "invalid selector: %v", err)
		}
	}
}

// ListenerSet reasons of the Accepted condition (gwapiv1's).
var (
	reasonNotAllowed        = string(gwapiv1.ListenerSetReasonNotAllowed)
	reasonParentNotAccepted = string(gwapiv1.ListenerSetReasonParentNotAccepted)
)

// validateListenerSets checks every well-formed ListenerSet, attaches
// those whose parent Gateway admits them, and resolves the conflicts of
// their listeners with the Gateway's and with each other's.
func (l *loader) validateListenerSets(ix *setIndex) {
	slices.SortFunc(l.set.ListenerSets, func(a, b *ListenerSet) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	ix.listenerSets = make(map[nsName]*ListenerSet, len(l.set.ListenerSets))
	byParent := map[*Gateway][]*ListenerSet{}
	var parents []*Gateway
	for _, ls := range l.set.ListenerSets {
		ix.listenerSets[nsName{ls.Namespace, ls.Name}] = ls
		if l.malformed[resourceKey{KindListenerSet, ls.Namespace, ls.Name}] {
			continue
		}
		if len(ls.Spec.Listeners) == 0 {
			l.errorf(ls.Source, "spec.listeners", "at least one listener is required")
		}
		names := make(map[gwapiv1.SectionName]int)
		for i, e := range ls.Spec.Listeners {
			if e.Name == "" || checkSubdomain(string(e.Name)) != "" {
				continue
			}
			if j, dup := names[e.Name]; dup {
				l.listenerErrorf(ls, i, fmt.Sprintf("spec.listeners[%d].name", i), lsInvalid, "duplicate listener name %q (also spec.listeners[%d])", e.Name, j)
			} else {
				names[e.Name] = i
			}
		}
		g := l.listenerSetParent(ls, ix)
		if g == nil {
			for i, e := range ls.Listeners() {
				l.checkListener(ls, i, fmt.Sprintf("spec.listeners[%d]", i), &e, true)
			}
			continue
		}
		if byParent[g] == nil {
			parents = append(parents, g)
		}
		byParent[g] = append(byParent[g], ls)
	}
	binds := l.gatewayBindings()
	for _, g := range parents {
		l.mergeListeners(g, byParent[g], binds)
	}
}

// listenerSetParent returns the Gateway that the ListenerSet attaches to,
// or nil after reporting why it does not attach.
func (l *loader) listenerSetParent(ls *ListenerSet, ix *setIndex) *Gateway {
	pr, src := &ls.Spec.ParentRef, ls.Source
	reject := func(field, reason string, cascade bool, format string, args ...any) {
		l.classifiedf(src, field, attribution{class: classInvalid, reason: reason, cascade: cascade}, format, args...)
	}
	if pr.Group != nil && *pr.Group != GatewayGroup {
		reject("spec.parentRef.group", string(gwapiv1.ListenerSetReasonInvalid), false, "parent group %q is not supported (want %s)", *pr.Group, GatewayGroup)
		return nil
	}
	if pr.Kind != nil && *pr.Kind != KindGateway {
		reject("spec.parentRef.kind", string(gwapiv1.ListenerSetReasonInvalid), false, "parent kind %q is not supported (want Gateway)", *pr.Kind)
		return nil
	}
	if pr.Name == "" {
		reject("spec.parentRef.name", string(gwapiv1.ListenerSetReasonInvalid), false, "name is required")
		return nil
	}
	ns, name := ls.ParentGateway()
	g := ix.gateways[nsName{ns, name}]
	if g == nil && ns == DefaultNamespace {
		g = ix.gateways[nsName{"", name}]
	}
	if g == nil {
		key := resourceKey{KindGateway, ns, name}
		if why, ok := l.pass.ignored[key]; ok {
			reject("spec.parentRef.name", reasonParentNotAccepted, true, "gateway %s is not served by meshgate: %s", refName(ns, name, ls.Namespace), why)
			return nil
		}
		_, rejected := l.pass.rejected[key]
		reject("spec.parentRef.name", reasonParentNotAccepted, rejected, "gateway %s not found%s", refName(ns, name, ls.Namespace), l.rejectedNote(KindGateway, ns, name))
		return nil
	}
	if !l.set.AllowsListenerSets(g, ls.Namespace) {
		from := gwapiv1.NamespacesFromNone
		if al := g.Spec.AllowedListeners; al != nil && al.Namespaces != nil && al.Namespaces.From != nil {
			from = *al.Namespaces.From
		}
		reject("spec.parentRef", reasonNotAllowed, false, "gateway %s does not allow ListenerSets from namespace %q (its allowedListeners.namespaces.from is %s; see %s:%d)",
			refName(ns, name, ls.Namespace), cmp.Or(ls.Namespace, DefaultNamespace), from, g.Source.File, g.Source.LineOf("spec.allowedListeners"))
		return nil
	}
	if l.pass.attachedSets == nil {
		l.pass.attachedSets = make(map[*Gateway]int32)
	}
	l.pass.attachedSets[g]++
	if l.pass.setAttached == nil {
		l.pass.setAttached = make(map[*ListenerSet]bool)
	}
	l.pass.setAttached[ls] = true
	return g
}

// binding is a listener's address and port taken on the gateway nodes'
// host, for messages about another that would take it too.
type binding struct {
	addr  netip.Addr
	port  int32
	gw    *Gateway
	owner string // who binds it, for messages
}

// gatewayBindings are the addresses and ports the Gateways' own listeners
// bind.
func (l *loader) gatewayBindings() []binding {
	var out []binding
	for _, g := range l.set.Gateways {
		addr, err := netip.ParseAddr(g.BindAddress())
		if err != nil {
			continue
		}
		for i, ls := range g.Spec.Listeners {
			out = append(out, binding{addr: addr, port: ls.Port, gw: g,
				owner: fmt.Sprintf("Gateway %q listener %q (%s:%d)", g.Namespace+"/"+g.Name, ls.Name, g.Source.File, g.Source.LineOf(fmt.Sprintf("spec.listeners[%d]", i)))})
		}
	}
	return out
}

// mergeListeners resolves the listeners of the ListenerSets sets (in
// precedence order) attached to g: a listener that conflicts with one of
// g or of an earlier ListenerSet is not programmed (ProtocolConflict: the
// port has another protocol; HostnameConflict: the port and protocol have
// that hostname), nor one on a port another Gateway binds on the same
// address (PortUnavailable); the others are checked as a Gateway's.
func (l *loader) mergeListeners(g *Gateway, sets []*ListenerSet, binds []binding) {
	type taken struct {
		ls    *gwapiv1.Listener
		owner string
	}
	var slots []taken
	for i := range g.Spec.Listeners {
		ls := &g.Spec.Listeners[i]
		if ls.Port >= 1 && ls.Port <= 65535 && ls.Protocol != "" {
			slots = append(slots, taken{ls, fmt.Sprintf("listener %q of gateway %s", ls.Name, refName(g.Namespace, g.Name, ""))})
		}
	}
	addr, addrErr := netip.ParseAddr(g.BindAddress())
	for _, set := range sets {
		listeners := set.Listeners()
		for i := range listeners {
			ls := &listeners[i]
			p := fmt.Sprintf("spec.listeners[%d]", i)
			conflict := false
			if ls.Port >= 1 && ls.Port <= 65535 && ls.Protocol != "" {
				for _, t := range slots {
					if t.ls.Port != ls.Port {
						continue
					}
					switch {
					case t.ls.Protocol != ls.Protocol:
						l.listenerErrorf(set, i, p, string(gwapiv1.ListenerReasonProtocolConflict), "listener %q conflicts with %s: port %d is %s there, %s here",
							ls.Name, t.owner, ls.Port, t.ls.Protocol, ls.Protocol)
						conflict = true
					case listenerHostnameOf(t.ls) == listenerHostnameOf(ls):
						l.listenerErrorf(set, i, p, string(gwapiv1.ListenerReasonHostnameConflict), "listener %q conflicts with %s: same port %d and %s",
							ls.Name, t.owner, ls.Port, describeHostname(listenerHostnameOf(ls)))
						conflict = true
					}
					if conflict {
						break
					}
				}
				if !conflict && addrErr == nil {
					for _, b := range binds {
						if b.gw == g || b.port != ls.Port || (b.addr != addr && !b.addr.IsUnspecified() && !addr.IsUnspecified()) {
							continue
						}
						l.listenerErrorf(set, i, p+".port", string(gwapiv1.ListenerReasonPortUnavailable), "listener %q binds %s on gateway %s, already bound by %s",
							ls.Name, netip.AddrPortFrom(addr, uint16(ls.Port)), refName(g.Namespace, g.Name, set.Namespace), b.owner)
						conflict = true
						break
					}
				}
			}
			l.checkListener(set, i, p, ls, !conflict)
			if !conflict && ls.Port >= 1 && ls.Port <= 65535 && ls.Protocol != "" {
				slots = append(slots, taken{ls, fmt.Sprintf("listener %q of ListenerSet %s (%s:%d)", ls.Name, refName(set.Namespace, set.Name, ""), set.Source.File, set.Source.LineOf(p))})
			}
		}
	}
}

// programmedListenerSetListeners returns sets with, in place of each one
// that has listeners not programmed, a copy without them.
func programmedListenerSetListeners(sets []*ListenerSet, bad map[listenerOwner]map[int]bool) []*ListenerSet {
	if len(bad) == 0 {
		return sets
	}
	out := slices.Clone(sets)
	for i, ls := range sets {
		if len(bad[ls]) == 0 {
			continue
		}
		c := *ls
		c.Spec.Listeners = nil
		for j, e := range ls.Spec.Listeners {
			if !bad[ls][j] {
				c.Spec.Listeners = append(c.Spec.Listeners, e)
			}
		}
		c.original = ls
		out[i] = &c
	}
	return out
}

// checkListenerSetParentRef checks a route's parentRef of kind ListenerSet.
func (l *loader) checkListenerSetParentRef(r *HTTPRoute, i int, p, ns string, pr *gwapiv1.ParentReference, ix *setIndex) {
	ls := ix.listenerSets[nsName{ns, string(pr.Name)}]
	if ls == nil || l.malformed[resourceKey{KindListenerSet, ns, string(pr.Name)}] {
		l.parentErrorf(r.Source, i, p+".name", string(gwapiv1.RouteReasonNoMatchingParent), "ListenerSet %s not found%s", refName(ns, string(pr.Name), r.Namespace),
			l.rejectedNote(KindListenerSet, ns, string(pr.Name)))
		return
	}
	if !l.pass.setAttached[ls] {
		// Follows from the ListenerSet's own problem, reported on it.
		l.classifiedf(r.Source, p, attribution{class: classParent, index: i, reason: string(gwapiv1.RouteReasonNoMatchingParent), cascade: true},
			"ListenerSet %s is not attached to a Gateway (see its status, %s:%d)", refName(ns, ls.Name, r.Namespace), ls.Source.File, ls.Source.Line)
		return
	}
	l.checkListenerAttachment(r, i, p, pr, ls, func(lst *gwapiv1.Listener, routeNamespace string) bool {
		return l.set.ListenerSetListenerAllows(ls, lst, routeNamespace)
	})
}
