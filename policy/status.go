package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ControllerName is meshgate's Gateway API controller name: the
// controllerName of its route parent statuses (and of the GatewayClasses
// it serves).
const ControllerName = "meshgate.dev/controller"

// States of a resource (ResourceStatus.State).
const (
	// StateAccepted: the resource as written is serving (a reference or a
	// parent of it may still not resolve: see its conditions).
	StateAccepted = "Accepted"
	// StateRejected: the resource is invalid and nothing of it is serving.
	StateRejected = "Rejected"
	// StateLastGood: the resource is invalid (or its file could not be
	// read); its last good version is serving.
	StateLastGood = "LastGood"
	// StateFailClosed: a SecurityPolicy is invalid, without a last good
	// version: every request to its targets is denied until it is fixed.
	StateFailClosed = "FailClosed"
	// StateIgnored: the resource is another controller's (a Gateway of a
	// GatewayClass whose controllerName is not meshgate's, such a
	// GatewayClass): not served, not an error.
	StateIgnored = "Ignored"
)

// meshgate's condition types and reasons, beside the Gateway API's.
const (
	// ConditionLastGoodVersion is True when a rejected resource's last good
	// version serves (reason ReasonLastGoodVersionServing).
	ConditionLastGoodVersion     = "meshgate.dev/LastGoodVersion"
	ReasonLastGoodVersionServing = "LastGoodVersionServing"
	// ConditionFailClosed is True when a rejected SecurityPolicy's targets
	// deny every request (reason ReasonDenyAll).
	ConditionFailClosed = "meshgate.dev/FailClosed"
	ReasonDenyAll       = "DenyAll"
	// ReasonInvalid rejects a resource of a meshgate kind (or a
	// duplicate); ReasonTargetNotFound is a SecurityPolicy ResolvedRefs
	// reason.
	ReasonInvalid = "Invalid"
	// ReasonOtherController: the resource is another controller's.
	ReasonOtherController = "OtherController"
	// ReasonFileNotRead: the resource's file could not be read as
	// resources; its last good version serves.
	ReasonFileNotRead = "FileNotRead"
	// ConditionAttached is False (reason ReasonNoParentRefs) on a route
	// without parentRefs: it is accepted, attached nowhere.
	ConditionAttached    = "meshgate.dev/Attached"
	ReasonNoParentRefs   = "NoParentRefs"
	ReasonTargetNotFound = "TargetNotFound"
)

// ResourceStatus is the status of one resource after Evaluate.
type ResourceStatus struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// File and Line locate the document.
	File string `json:"file"`
	Line int    `json:"line"`
	// State is StateAccepted, StateRejected, StateLastGood or
	// StateFailClosed.
	State string `json:"state"`
	// Reason is the reason of the first condition that is not as it
	// should be (Invalid, BackendNotFound, NoMatchingParent...), or "".
	Reason string `json:"reason,omitempty"`
	// Problems are the errors about the resource, as file:line: field:
	// message.
	Problems []string `json:"problems,omitempty"`
	// Object is the resource as Kubernetes shows it: apiVersion, kind,
	// metadata, spec (as written now) and status.
	Object *Object `json:"object"`
}

// Object is a resource as Kubernetes shows it, status included.
type Object struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   documentMeta `json:"metadata"`
	Spec       any          `json:"spec"`
	Status     StatusBlock  `json:"status"`
}

// StatusBlock is the status of a resource, shaped as its kind's status in
// Kubernetes: a Gateway's conditions and listeners (gwapiv1.GatewayStatus),
// a route's parents (gwapiv1.RouteStatus), conditions for meshgate kinds.
type StatusBlock struct {
	// Addresses (a Gateway's) are the addresses its listeners are served
	// on: its IPAddress spec.addresses, or DefaultGatewayAddress.
	Addresses  []gwapiv1.GatewayStatusAddress `json:"addresses,omitempty"`
	Conditions []metav1.Condition             `json:"conditions,omitempty"`
	Listeners  []gwapiv1.ListenerStatus       `json:"listeners,omitempty"`
	Parents    []gwapiv1.RouteParentStatus    `json:"parents,omitempty"`
	// Ancestors (a BackendTLSPolicy's) are its conditions for each Gateway
	// whose routes send to its targets, as the Gateway API's PolicyStatus.
	Ancestors []gwapiv1.PolicyAncestorStatus `json:"ancestors,omitempty"`
	// AttachedListenerSets is, on a Gateway that sets allowedListeners
	// (or has ListenerSets attached), how many are.
	AttachedListenerSets *int32 `json:"attachedListenerSets,omitempty"`
}

// Serving reports whether some version of the resource serves.
func (s *ResourceStatus) Serving() bool { return s.State != StateRejected }

// statusContext is what statuses are written from.
type statusContext struct {
	final *loader // the last pass
	errs  map[*candidate][]*Error
	live  map[resourceKey]*candidate
	when  metav1.Time
	// lost are the errors of files whose content was lost, by file.
	lost map[string][]*Error
}

// statuses writes the status of every candidate of this policy (and of the
// last good ones kept from damaged files).
func (e *evaluation) statuses(all, live []*candidate, p *loader) []ResourceStatus {
	sc := &statusContext{final: p, errs: attribute(p.errs, live), live: make(map[resourceKey]*candidate, len(live)),
		when: metav1.NewTime(now()), lost: make(map[string][]*Error)}
	for _, c := range live {
		sc.live[c.key] = c
	}
	docs := make(map[documentID]bool, len(all))
	for _, c := range all {
		docs[c.doc()] = true
	}
	for _, err := range e.decoded.errs {
		if !docs[err.attr.doc] {
			sc.lost[err.File] = append(sc.lost[err.File], err)
		}
	}
	var out []ResourceStatus
	for _, c := range all {
		if c.duplicate {
			c.rejected = c.decodeErrs
		}
		out = append(out, sc.status(c))
	}
	for _, c := range live {
		if c.fromDamagedFile {
			out = append(out, sc.status(c))
		}
	}
	slices.SortStableFunc(out, func(a, b ResourceStatus) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return out
}

// status is the status of one document's resource c.
func (sc *statusContext) status(c *candidate) ResourceStatus {
	rs := ResourceStatus{Kind: c.key.kind, Namespace: c.key.namespace, Name: c.key.name, File: c.source.File, Line: c.source.Line}
	serving := sc.live[c.key]
	var problems []*Error // what the conditions say is wrong
	note := ""            // what serves instead, for the Accepted condition's message
	switch {
	case c.ignored != "":
		return sc.ignoredStatus(rs, c, c.ignored)
	case c.duplicate:
		rs.State = StateRejected
		problems = c.rejected
	case serving == c && c.fromDamagedFile:
		rs.State = StateLastGood
		problems = sc.lost[c.source.File]
		note = "its file could not be read as resources; this last good version is serving"
	case serving == c:
		rs.State = StateAccepted
		problems = sc.errs[c]
	case serving != nil && serving.lastGood:
		rs.State = StateLastGood
		problems = c.rejected
		note = fmt.Sprintf("the last good version (%s:%d) is serving", serving.source.File, serving.source.Line)
	case serving != nil && serving.failClosed:
		rs.State = StateFailClosed
		problems = c.rejected
		var targets []string
		for _, t := range serving.res.(*SecurityPolicy).Spec.TargetRefs {
			targets = append(targets, t.Kind+" "+strconvQuote(t.Name))
		}
		note = "every request to " + strings.Join(targets, ", ") + " is denied until it is fixed"
	default:
		rs.State = StateRejected
		problems = c.rejected
		if lg := lastGoodDropped(c, sc); lg != "" {
			note = lg
		}
	}
	for _, err := range problems {
		rs.Problems = append(rs.Problems, err.Error())
	}
	rejected := rs.State != StateAccepted
	switch {
	case !rejected: // the reason of a problem, if any, below
	case c.fromDamagedFile:
		rs.Reason = ReasonFileNotRead
	default:
		rs.Reason = ReasonInvalid // or the kind's own reason, below
	}
	obj := &Object{APIVersion: c.kind.apiVersion, Kind: c.kind.name,
		Metadata: documentMeta{Name: c.key.name, Namespace: c.key.namespace, Generation: c.observedGeneration()}}
	rs.Object = obj
	cond := func(typ string, ok bool, reason, message string) metav1.Condition {
		status := metav1.ConditionTrue
		if !ok {
			status = metav1.ConditionFalse
		}
		return metav1.Condition{Type: typ, Status: status, ObservedGeneration: c.observedGeneration(), Reason: reason,
			Message: message, LastTransitionTime: sc.when}
	}
	extra := func() []metav1.Condition {
		switch rs.State {
		case StateLastGood:
			return []metav1.Condition{cond(ConditionLastGoodVersion, true, ReasonLastGoodVersionServing, note)}
		case StateFailClosed:
			return []metav1.Condition{cond(ConditionFailClosed, true, ReasonDenyAll, note)}
		}
		return nil
	}
	message := func(errs []*Error, fallback string) string {
		if len(errs) == 0 {
			return fallback
		}
		msgs := make([]string, 0, len(errs)+1)
		for _, err := range errs {
			msgs = append(msgs, err.Error())
		}
		if note != "" && rejected {
			msgs = append(msgs, note)
		}
		return strings.Join(msgs, "; ")
	}
	byClass := func(class errorClass, index int) []*Error {
		var out []*Error
		for _, err := range problems {
			if err.attr.class == class && (index < 0 || err.attr.index == index) {
				out = append(out, err)
			}
		}
		return out
	}
	firstReason := func(errs []*Error, def string) string {
		if len(errs) > 0 && errs[0].attr.reason != "" {
			return errs[0].attr.reason
		}
		return def
	}

	switch res := c.res.(type) {
	case *GatewayClass:
		obj.Metadata.Labels, obj.Metadata.Annotations = res.Labels, res.Annotations
		obj.Spec = res.Spec
		if string(res.Spec.ControllerName) != ControllerName && !rejected {
			return sc.ignoredStatus(rs, c, fmt.Sprintf("its controllerName is %q (meshgate's is %s)", res.Spec.ControllerName, ControllerName))
		}
		if rejected {
			obj.Status.Conditions = append(obj.Status.Conditions, cond(string(gwapiv1.GatewayClassConditionStatusAccepted), false,
				string(gwapiv1.GatewayClassReasonInvalidParameters), message(problems, "")))
		} else {
			obj.Status.Conditions = append(obj.Status.Conditions, cond(string(gwapiv1.GatewayClassConditionStatusAccepted), true,
				string(gwapiv1.GatewayClassReasonAccepted), "Accepted"))
		}
		obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
	case *Gateway:
		obj.Metadata.Labels, obj.Metadata.Annotations = res.Labels, res.Annotations
		obj.Spec = res.Spec
		listenerErrs := byClass(classListener, -1)
		switch {
		case !rejected && len(listenerErrs) > 0:
			rs.Reason = string(gwapiv1.GatewayReasonListenersNotValid)
			obj.Status.Conditions = append(obj.Status.Conditions,
				cond(string(gwapiv1.GatewayConditionAccepted), true, rs.Reason, message(listenerErrs, "")))
		case !rejected:
			obj.Status.Conditions = append(obj.Status.Conditions,
				cond(string(gwapiv1.GatewayConditionAccepted), true, string(gwapiv1.GatewayReasonAccepted), "Accepted"))
		default:
			reason := string(gwapiv1.GatewayReasonInvalid)
			if len(listenerErrs) == len(problems) && len(problems) > 0 {
				reason = string(gwapiv1.GatewayReasonListenersNotValid)
			}
			if slices.ContainsFunc(problems, func(err *Error) bool {
				return err.attr.class == classInvalid && err.attr.reason == string(gwapiv1.GatewayReasonUnsupportedAddress)
			}) {
				reason = string(gwapiv1.GatewayReasonUnsupportedAddress)
			}
			if rs.Reason == ReasonInvalid {
				rs.Reason = reason
			}
			obj.Status.Conditions = append(obj.Status.Conditions,
				cond(string(gwapiv1.GatewayConditionAccepted), false, reason, message(problems, reason)))
		}
		programmed := rs.State == StateAccepted || rs.State == StateLastGood
		progReason := string(gwapiv1.GatewayReasonProgrammed)
		if !programmed {
			progReason = string(gwapiv1.GatewayReasonInvalid)
		}
		obj.Status.Conditions = append(obj.Status.Conditions, cond(string(gwapiv1.GatewayConditionProgrammed), programmed, progReason, cmp.Or(note, progReason)))
		obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
		obj.Status.Listeners = sc.listenerStatuses(res, serving, byClass, cond, rs.State, false)
		if sg, ok := servingGateway(serving); ok && programmed {
			for _, a := range sg.BindAddresses() {
				obj.Status.Addresses = append(obj.Status.Addresses,
					gwapiv1.GatewayStatusAddress{Type: ptrTo(gwapiv1.IPAddressType), Value: a})
			}
		}
		var attachedSets int32
		if serving != nil {
			if sg, ok := serving.res.(*Gateway); ok {
				attachedSets = sc.final.pass.attachedSets[sg]
			}
		}
		if res.Spec.AllowedListeners != nil || attachedSets > 0 {
			obj.Status.AttachedListenerSets = &attachedSets
		}
	case *ListenerSet:
		obj.Metadata.Labels, obj.Metadata.Annotations = res.Labels, res.Annotations
		obj.Spec = res.Spec
		listenerErrs := byClass(classListener, -1)
		accReason, accMsg := string(gwapiv1.ListenerSetReasonAccepted), "Accepted"
		progReason := string(gwapiv1.ListenerSetReasonProgrammed)
		switch {
		case !rejected && len(listenerErrs) > 0:
			accReason, accMsg = string(gwapiv1.ListenerSetReasonListenersNotValid), message(listenerErrs, "")
		case rejected:
			accReason = string(gwapiv1.ListenerSetReasonInvalid)
			if len(listenerErrs) == len(problems) && len(problems) > 0 {
				accReason = string(gwapiv1.ListenerSetReasonListenersNotValid)
			} else {
				accReason = firstReason(problems, accReason)
			}
			accMsg, progReason = message(problems, accReason), accReason
			if rs.Reason == ReasonInvalid {
				rs.Reason = accReason
			}
		}
		if !rejected && len(listenerErrs) > 0 && rs.Reason == "" {
			rs.Reason = accReason
		}
		programmed := rs.State == StateAccepted || rs.State == StateLastGood
		obj.Status.Conditions = append(obj.Status.Conditions,
			cond(string(gwapiv1.ListenerSetConditionAccepted), !rejected, accReason, accMsg),
			cond(string(gwapiv1.ListenerSetConditionProgrammed), programmed, progReason, cmp.Or(note, progReason)))
		obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
		obj.Status.Listeners = sc.listenerStatuses(res, serving, byClass, cond, rs.State, true)
	case *HTTPRoute, *TCPRoute, *TLSRoute:
		var parentRefs []gwapiv1.ParentReference
		obj.Metadata.Labels, obj.Metadata.Annotations, obj.Spec, parentRefs = routeParts(res)
		refErrs := byClass(classRef, -1)
		for i, pr := range parentRefs {
			ps := gwapiv1.RouteParentStatus{ParentRef: defaultedParentRef(pr), ControllerName: ControllerName}
			if rejected {
				ps.Conditions = append(ps.Conditions, cond(string(gwapiv1.RouteConditionAccepted), false,
					string(gwapiv1.RouteReasonUnsupportedValue), message(problems, "")))
				ps.Conditions = append(ps.Conditions, extra()...)
				obj.Status.Parents = append(obj.Status.Parents, ps)
				continue
			}
			parentErrs := byClass(classParent, i)
			reason := firstReason(parentErrs, string(gwapiv1.RouteReasonAccepted))
			ps.Conditions = append(ps.Conditions, cond(string(gwapiv1.RouteConditionAccepted), len(parentErrs) == 0, reason, message(parentErrs, "Accepted")))
			refReason := firstReason(refErrs, string(gwapiv1.RouteReasonResolvedRefs))
			ps.Conditions = append(ps.Conditions, cond(string(gwapiv1.RouteConditionResolvedRefs), len(refErrs) == 0, refReason, message(refErrs, "Resolved")))
			if len(parentErrs) > 0 && rs.Reason == "" {
				rs.Reason = reason
			}
			obj.Status.Parents = append(obj.Status.Parents, ps)
		}
		if len(refErrs) > 0 && !rejected && rs.Reason == "" {
			rs.Reason = firstReason(refErrs, "")
		}
		if rs.Reason == ReasonInvalid {
			rs.Reason = string(gwapiv1.RouteReasonUnsupportedValue)
		}
		if len(parentRefs) == 0 {
			// The Gateway API has no status for a route without parents:
			// meshgate says it at the top.
			if rejected {
				obj.Status.Conditions = append(obj.Status.Conditions, cond("Accepted", false, string(gwapiv1.RouteReasonUnsupportedValue), message(problems, "")))
			} else {
				obj.Status.Conditions = append(obj.Status.Conditions, cond("Accepted", true, string(gwapiv1.RouteReasonAccepted), "Accepted"),
					cond(ConditionAttached, false, ReasonNoParentRefs, "the route has no parentRefs: it is attached to no Gateway and no Service"))
				if rs.Reason == "" {
					rs.Reason = ReasonNoParentRefs
				}
			}
			obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
		}
	case *BackendTLSPolicy:
		obj.Metadata.Labels, obj.Metadata.Annotations = res.Labels, res.Annotations
		obj.Spec = res.Spec
		obj.Status.Conditions = sc.backendTLSConditions(res, rejected, problems, byClass(classRef, -1), message, firstReason, cond, &rs)
		obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
		for _, a := range sc.final.set.backendTLSAncestors(res) {
			obj.Status.Ancestors = append(obj.Status.Ancestors, gwapiv1.PolicyAncestorStatus{
				AncestorRef: a, ControllerName: ControllerName, Conditions: obj.Status.Conditions})
		}
	default:
		switch res := res.(type) {
		case *ConfigMap:
			obj.Metadata.Annotations = res.Annotations
		case *Namespace:
			obj.Metadata.Labels = res.Labels
			obj.Spec = res.Spec
		case *ReferenceGrant:
			obj.Metadata.Labels, obj.Metadata.Annotations = res.Labels, res.Annotations
			obj.Spec = res.Spec
		case *Service:
			obj.Spec = res.Spec
		case *SecurityPolicy:
			obj.Spec = res.Spec
		case *TrafficPolicy:
			obj.Spec = res.Spec
		case *MeshConfig:
			obj.Spec = res.Spec
		}
		if rejected {
			obj.Status.Conditions = append(obj.Status.Conditions, cond("Accepted", false, ReasonInvalid, message(problems, "")))
		} else {
			obj.Status.Conditions = append(obj.Status.Conditions, cond("Accepted", true, "Accepted", "Accepted"))
			if refErrs := byClass(classRef, -1); len(refErrs) > 0 {
				reason := firstReason(refErrs, ReasonTargetNotFound)
				obj.Status.Conditions = append(obj.Status.Conditions, cond("ResolvedRefs", false, reason, message(refErrs, "")))
				rs.Reason = reason
			}
		}
		obj.Status.Conditions = append(obj.Status.Conditions, extra()...)
	}
	return rs
}

// ignoredStatus is the status of a resource of another controller: not
// served, why in an Accepted=Unknown condition.
func (sc *statusContext) ignoredStatus(rs ResourceStatus, c *candidate, why string) ResourceStatus {
	rs.State, rs.Reason = StateIgnored, ReasonOtherController
	obj := &Object{APIVersion: c.kind.apiVersion, Kind: c.kind.name,
		Metadata: documentMeta{Name: c.key.name, Namespace: c.key.namespace, Generation: c.observedGeneration()}}
	switch res := c.res.(type) {
	case *Gateway:
		obj.Metadata.Labels, obj.Metadata.Annotations, obj.Spec = res.Labels, res.Annotations, res.Spec
	case *GatewayClass:
		obj.Metadata.Labels, obj.Metadata.Annotations, obj.Spec = res.Labels, res.Annotations, res.Spec
	}
	obj.Status.Conditions = []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionUnknown, ObservedGeneration: c.observedGeneration(),
		Reason: ReasonOtherController, Message: "not served by meshgate: " + why, LastTransitionTime: sc.when}}
	rs.Object = obj
	return rs
}

// listenerStatuses are the statuses of the listeners of g (a Gateway or a
// ListenerSet) as written now. conflictRejects: a conflicted listener is
// also Accepted=False and Programmed=False with the conflict's reason (as
// GEP-1713 has it for a ListenerSet's listener that loses a conflict).
func (sc *statusContext) listenerStatuses(g listenerOwner, serving *candidate, byClass func(errorClass, int) []*Error,
	cond func(string, bool, string, string) metav1.Condition, state string, conflictRejects bool) []gwapiv1.ListenerStatus {
	// Routes attach to the serving version: count by listener name.
	attached := map[gwapiv1.SectionName]int32{}
	if serving != nil {
		if sg, ok := serving.res.(listenerOwner); ok {
			sl := sg.ownerListeners()
			for i, n := range sc.final.pass.attached[sg] {
				attached[sl[i].Name] += n
			}
		}
	}
	listeners := g.ownerListeners()
	out := make([]gwapiv1.ListenerStatus, 0, len(listeners))
	for i, ls := range listeners {
		errs := byClass(classListener, i)
		st := gwapiv1.ListenerStatus{Name: ls.Name, AttachedRoutes: attached[ls.Name], SupportedKinds: supportedKinds(&ls)}
		accepted, conflict, kinds := true, []*Error(nil), []*Error(nil)
		acceptReason := string(gwapiv1.ListenerReasonAccepted)
		for _, err := range errs {
			switch err.attr.reason {
			case string(gwapiv1.ListenerReasonHostnameConflict), string(gwapiv1.ListenerReasonProtocolConflict):
				conflict = append(conflict, err)
			case string(gwapiv1.ListenerReasonInvalidRouteKinds):
				kinds = append(kinds, err)
			case string(gwapiv1.ListenerReasonInvalidCertificateRef), string(gwapiv1.ListenerReasonRefNotPermitted):
				// A certificateRef that does not resolve: accepted, not
				// programmed, ResolvedRefs=False (as the Gateway API has it).
				kinds = append(kinds, err)
			default:
				if accepted {
					acceptReason = err.attr.reason
				}
				accepted = false
			}
		}
		msg := func(errs []*Error, def string) string {
			if len(errs) == 0 {
				return def
			}
			m := make([]string, len(errs))
			for i, err := range errs {
				m[i] = err.Error()
			}
			return strings.Join(m, "; ")
		}
		var notAccepted []*Error
		for _, err := range errs {
			if !slices.Contains(conflict, err) && !slices.Contains(kinds, err) {
				notAccepted = append(notAccepted, err)
			}
		}
		conflictReason := string(gwapiv1.ListenerReasonNoConflicts)
		if len(conflict) > 0 {
			conflictReason = conflict[0].attr.reason
		}
		if conflictRejects && len(conflict) > 0 && accepted {
			accepted, acceptReason, notAccepted = false, conflictReason, conflict
		}
		st.Conditions = append(st.Conditions, cond(string(gwapiv1.ListenerConditionAccepted), accepted, acceptReason, msg(notAccepted, "Accepted")))
		c := cond(string(gwapiv1.ListenerConditionConflicted), len(conflict) > 0, conflictReason, msg(conflict, "No conflicts"))
		st.Conditions = append(st.Conditions, c)
		refReason := string(gwapiv1.ListenerReasonResolvedRefs)
		if len(kinds) > 0 {
			refReason = kinds[0].attr.reason
			if refReason == string(gwapiv1.ListenerReasonInvalidRouteKinds) {
				st.SupportedKinds = fittingKinds(&ls)
			}
		}
		st.Conditions = append(st.Conditions, cond(string(gwapiv1.ListenerConditionResolvedRefs), len(kinds) == 0, refReason, msg(kinds, "Resolved")))
		programmed := len(errs) == 0 && (state == StateAccepted || state == StateLastGood)
		progReason := string(gwapiv1.ListenerReasonProgrammed)
		switch {
		case programmed:
		case conflictRejects && len(conflict) > 0:
			progReason = conflictReason
		default:
			progReason = string(gwapiv1.ListenerReasonInvalid)
		}
		st.Conditions = append(st.Conditions, cond(string(gwapiv1.ListenerConditionProgrammed), programmed, progReason, progReason))
		out = append(out, st)
	}
	return out
}

// lastGoodDropped says why the last good version of a rejected resource is
// not serving either, or "".
func lastGoodDropped(c *candidate, _ *statusContext) string {
	lg := c.droppedLastGood
	if lg == nil {
		return ""
	}
	msgs := make([]string, len(lg.rejected))
	for i, err := range lg.rejected {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("its last good version (%s:%d) is not serving either: %s", lg.source.File, lg.source.Line, strings.Join(msgs, "; "))
}

// observedGeneration is the generation the status of c is written for:
// its document's metadata.generation, 1 when not written (see
// documentMeta.Generation).
func (c *candidate) observedGeneration() int64 {
	if c.generation > 0 {
		return c.generation
	}
	if om, ok := c.res.(interface{ GetGeneration() int64 }); ok && om.GetGeneration() > 0 {
		return om.GetGeneration() // a last good version, kept as a resource
	}
	return 1
}

// servingGateway is the Gateway of the serving candidate, if any.
func servingGateway(serving *candidate) (*Gateway, bool) {
	if serving == nil {
		return nil, false
	}
	g, ok := serving.res.(*Gateway)
	if ok && g.original != nil {
		g = g.original
	}
	return g, ok
}

// defaultedParentRef is pr as the Gateway API's CRDs store it, and as a
// Kubernetes controller copies it to route status: group and kind set
// (gateway.networking.k8s.io and Gateway when left out; the core group ""
// for a Service parent written without a group or with meshgate's group
// or the "core" alias, which is how meshgate reads them).
func defaultedParentRef(pr gwapiv1.ParentReference) gwapiv1.ParentReference {
	if pr.Kind == nil {
		pr.Kind = ptrTo(gwapiv1.Kind(KindGateway))
	}
	if *pr.Kind == KindService && (pr.Group == nil || *pr.Group == MeshgateGroup || *pr.Group == coreGroupAlias) {
		pr.Group = ptrTo(gwapiv1.Group(""))
	}
	if pr.Group == nil {
		pr.Group = ptrTo(gwapiv1.Group(GatewayGroup))
	}
	return pr
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

func ptrTo[T any](v T) *T { return &v }

// backendTLSConditions are the Accepted and ResolvedRefs conditions of a
// BackendTLSPolicy (and its reason in rs): Accepted False with Invalid,
// Conflicted or NoValidCACertificate (no caCertificateRef is valid: its
// connections fail), or TargetNotFound; ResolvedRefs False with
// InvalidKind or InvalidCACertificateRef.
func (sc *statusContext) backendTLSConditions(p *BackendTLSPolicy, rejected bool, problems, refErrs []*Error,
	message func([]*Error, string) string, firstReason func([]*Error, string) string,
	cond func(string, bool, string, string) metav1.Condition, rs *ResourceStatus) []metav1.Condition {
	var caErrs, targetErrs []*Error
	for _, err := range refErrs {
		if err.attr.reason == ReasonTargetNotFound {
			targetErrs = append(targetErrs, err)
		} else {
			caErrs = append(caErrs, err)
		}
	}
	accepted := cond(string(gwapiv1.PolicyConditionAccepted), true, string(gwapiv1.PolicyReasonAccepted), "Accepted")
	switch {
	case rejected:
		reason := firstReason(problems, string(gwapiv1.PolicyReasonInvalid))
		if reason == ReasonInvalid {
			reason = string(gwapiv1.PolicyReasonInvalid)
		}
		rs.Reason = reason
		accepted = cond(string(gwapiv1.PolicyConditionAccepted), false, reason, message(problems, reason))
	case sc.final.set.backendTLSNoValidCA(p):
		rs.Reason = string(gwapiv1.BackendTLSPolicyReasonNoValidCACertificate)
		accepted = cond(string(gwapiv1.PolicyConditionAccepted), false, rs.Reason, message(caErrs, rs.Reason))
	case len(targetErrs) > 0:
		rs.Reason = ReasonTargetNotFound
		accepted = cond(string(gwapiv1.PolicyConditionAccepted), false, rs.Reason, message(targetErrs, rs.Reason))
	}
	resolved := cond(string(gwapiv1.BackendTLSPolicyConditionResolvedRefs), true, string(gwapiv1.BackendTLSPolicyReasonResolvedRefs), "Resolved")
	if len(caErrs) > 0 {
		reason := firstReason(caErrs, string(gwapiv1.BackendTLSPolicyReasonInvalidCACertificateRef))
		if rs.Reason == "" {
			rs.Reason = reason
		}
		resolved = cond(string(gwapiv1.BackendTLSPolicyConditionResolvedRefs), false, reason, message(caErrs, reason))
	}
	return []metav1.Condition{accepted, resolved}
}
