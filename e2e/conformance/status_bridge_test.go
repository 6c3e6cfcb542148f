package conformance

// The status bridge: meshgate's view of the resources, written back to the
// fake cluster as Gateway API status. Today meshgate has no per-resource
// status, so the bridge derives it from what the runner observes: which
// documents `meshgate validate` refused (see world.admit) and which Gateways
// got an address. When the control plane serves Gateway API status (an admin
// endpoint listing every resource with its conditions), this file is the one
// to replace: copy that status instead of deriving it.

import (
	"context"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// controllerName is the controller meshgate reports in route status.
const controllerName = "meshgate.dev/controller"

// observation is what the runner saw of meshgate in one sync.
type observation struct {
	rejected map[objKey][]string // refused documents and meshgate's messages
	addrs    map[objKey]string   // the address each Gateway listens on
}

func gatewaySpecAddress(ip string) gatewayv1.GatewaySpecAddress {
	return gatewayv1.GatewaySpecAddress{Type: ptr.To(gatewayv1.IPAddressType), Value: ip}
}

func condition(typ string, ok bool, reason, message string, gen int64) metav1.Condition {
	status := metav1.ConditionTrue
	if !ok {
		status = metav1.ConditionFalse
	}
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: gen, LastTransitionTime: metav1.Now()}
}

// writeStatus sets the status of every GatewayClass, Gateway, HTTPRoute and
// GRPCRoute of the snapshot.
func writeStatus(ctx context.Context, c client.Client, o *objects, obs observation) error {
	nsLabels := map[string]labels.Set{}
	for _, n := range o.namespaces {
		nsLabels[n.Name] = n.Labels
	}
	for i := range o.gatewayClasses {
		gc := &o.gatewayClasses[i]
		msgs, bad := obs.rejected[keyOf("GatewayClass", gc)]
		reason := string(gatewayv1.GatewayClassReasonAccepted)
		if bad {
			reason = string(gatewayv1.GatewayClassReasonUnsupported)
		}
		gc.Status.Conditions = []metav1.Condition{condition("Accepted", !bad, reason, strings.Join(msgs, "; "), gc.Generation)}
		if err := updateStatus(ctx, c, gc); err != nil {
			return err
		}
	}
	for i := range o.gateways {
		gw := &o.gateways[i]
		gw.Status = gatewayStatus(gw, o, obs, nsLabels)
		if err := updateStatus(ctx, c, gw); err != nil {
			return err
		}
	}
	for i := range o.httpRoutes {
		r := &o.httpRoutes[i]
		r.Status.Parents = routeParents(r.Namespace, r.Generation, r.Spec.ParentRefs, obs.rejected[keyOf("HTTPRoute", r)])
		if err := updateStatus(ctx, c, r); err != nil {
			return err
		}
	}
	for i := range o.grpcRoutes {
		r := &o.grpcRoutes[i]
		r.Status.Parents = routeParents(r.Namespace, r.Generation, r.Spec.ParentRefs, obs.rejected[keyOf("GRPCRoute", r)])
		if err := updateStatus(ctx, c, r); err != nil {
			return err
		}
	}
	return nil
}

func updateStatus(ctx context.Context, c client.Client, obj client.Object) error {
	err := c.Status().Update(ctx, obj)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // deleted or changed since the snapshot: the next sync writes it
	}
	return err
}

// gatewayStatus: a Gateway meshgate accepted is Accepted and Programmed on
// its address, each listener with the routes attached to it; a refused one
// is neither, with meshgate's messages.
func gatewayStatus(gw *gatewayv1.Gateway, o *objects, obs observation, nsLabels map[string]labels.Set) gatewayv1.GatewayStatus {
	gen := gw.Generation
	msgs, bad := obs.rejected[keyOf("Gateway", gw)]
	if bad {
		msg := strings.Join(msgs, "; ")
		return gatewayv1.GatewayStatus{Conditions: []metav1.Condition{
			condition("Accepted", false, string(gatewayv1.GatewayReasonInvalid), msg, gen),
			condition("Programmed", false, string(gatewayv1.GatewayReasonInvalid), msg, gen),
		}}
	}
	st := gatewayv1.GatewayStatus{Conditions: []metav1.Condition{
		condition("Accepted", true, string(gatewayv1.GatewayReasonAccepted), "", gen),
		condition("Programmed", true, string(gatewayv1.GatewayReasonProgrammed), "", gen),
	}}
	if ip := obs.addrs[keyOf("Gateway", gw)]; ip != "" && len(gw.Spec.Addresses) == 0 {
		st.Addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: ip}}
	}
	for _, a := range gw.Spec.Addresses {
		st.Addresses = append(st.Addresses, gatewayv1.GatewayStatusAddress{Type: a.Type, Value: a.Value})
	}
	for _, l := range gw.Spec.Listeners {
		ls := gatewayv1.ListenerStatus{
			Name:           l.Name,
			SupportedKinds: []gatewayv1.RouteGroupKind{{Group: ptr.To(gatewayv1.Group(gatewayv1.GroupName)), Kind: "HTTPRoute"}},
			Conditions: []metav1.Condition{
				condition("Accepted", true, string(gatewayv1.ListenerReasonAccepted), "", gen),
				condition("Programmed", true, string(gatewayv1.ListenerReasonProgrammed), "", gen),
				condition("ResolvedRefs", true, string(gatewayv1.ListenerReasonResolvedRefs), "", gen),
			},
		}
		for _, r := range o.httpRoutes {
			if _, bad := obs.rejected[keyOf("HTTPRoute", &r)]; bad {
				continue
			}
			if attaches(gw, l, r.Namespace, r.Spec.ParentRefs, nsLabels) {
				ls.AttachedRoutes++
			}
		}
		st.Listeners = append(st.Listeners, ls)
	}
	return st
}

// attaches reports whether a route with these parentRefs, in namespace ns,
// names listener l of gw and is allowed there.
func attaches(gw *gatewayv1.Gateway, l gatewayv1.Listener, ns string, refs []gatewayv1.ParentReference, nsLabels map[string]labels.Set) bool {
	for _, p := range refs {
		if ptr.Deref(p.Kind, "Gateway") != "Gateway" || ptr.Deref(p.Group, gatewayv1.GroupName) != gatewayv1.GroupName {
			continue
		}
		if string(p.Name) != gw.Name || string(ptr.Deref(p.Namespace, gatewayv1.Namespace(ns))) != gw.Namespace {
			continue
		}
		if p.SectionName != nil && *p.SectionName != l.Name || p.Port != nil && *p.Port != l.Port {
			continue
		}
		from := gatewayv1.NamespacesFromSame
		var sel *metav1.LabelSelector
		if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil {
			from = ptr.Deref(l.AllowedRoutes.Namespaces.From, from)
			sel = l.AllowedRoutes.Namespaces.Selector
		}
		switch from {
		case gatewayv1.NamespacesFromAll:
			return true
		case gatewayv1.NamespacesFromSame:
			if ns == gw.Namespace {
				return true
			}
		case gatewayv1.NamespacesFromSelector:
			if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && s.Matches(nsLabels[ns]) {
				return true
			}
		}
	}
	return false
}

// routeParents is a route's status.parents: one entry per parentRef,
// Accepted and ResolvedRefs when meshgate took the route, else Accepted
// false with a reason guessed from meshgate's message for that parent.
func routeParents(ns string, gen int64, refs []gatewayv1.ParentReference, msgs []string) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for i, p := range refs {
		ref := p
		if ref.Group == nil {
			ref.Group = ptr.To(gatewayv1.Group(gatewayv1.GroupName))
		}
		if ref.Kind == nil {
			ref.Kind = ptr.To(gatewayv1.Kind("Gateway"))
		}
		if ref.Namespace == nil {
			ref.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: controllerName}
		if len(msgs) == 0 {
			ps.Conditions = []metav1.Condition{
				condition("Accepted", true, string(gatewayv1.RouteReasonAccepted), "", gen),
				condition("ResolvedRefs", true, string(gatewayv1.RouteReasonResolvedRefs), "", gen),
			}
		} else {
			msg := strings.Join(msgs, "; ")
			accepted, resolved := routeReasons(msgs, i)
			ps.Conditions = []metav1.Condition{
				condition("Accepted", false, accepted, msg, gen),
				condition("ResolvedRefs", resolved == string(gatewayv1.RouteReasonResolvedRefs), resolved, msg, gen),
			}
		}
		out = append(out, ps)
	}
	return out
}

// routeReasons maps meshgate's messages on a refused route to the
// specification's reasons for parent i.
func routeReasons(msgs []string, i int) (accepted, resolved string) {
	accepted = string(gatewayv1.RouteReasonUnsupportedValue)
	resolved = string(gatewayv1.RouteReasonResolvedRefs)
	parent := "spec.parentRefs[" + strconv.Itoa(i) + "]"
	for _, m := range msgs {
		switch {
		case strings.Contains(m, "backendRefs") && strings.Contains(m, "not found"):
			resolved = string(gatewayv1.RouteReasonBackendNotFound)
		case strings.Contains(m, "backendRefs") && strings.Contains(m, "kind"):
			resolved = string(gatewayv1.RouteReasonInvalidKind)
		case strings.HasPrefix(m, parent) && (strings.Contains(m, "not found") || strings.Contains(m, "has no listener") || strings.Contains(m, "is not on port")):
			accepted = string(gatewayv1.RouteReasonNoMatchingParent)
		case strings.HasPrefix(m, parent) && strings.Contains(m, "allow"):
			accepted = string(gatewayv1.RouteReasonNotAllowedByListeners)
		case strings.Contains(m, "hostname") && strings.Contains(m, "match"):
			accepted = string(gatewayv1.RouteReasonNoMatchingListenerHostname)
		}
	}
	return accepted, resolved
}
