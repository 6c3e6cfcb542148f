package policy

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Result is what Evaluate makes of a policy: the resources to serve, every
// problem, and the status of every resource.
type Result struct {
	// Set holds the accepted resources only (and, for resources rejected
	// now, their last good versions; see Evaluate). It is nil only when the
	// policy cannot be served at all: a rejected MeshConfig without a last
	// good version.
	Set *Set
	// Errors are every problem of the files as written, exactly what Load
	// reports (sorted by file, then line).
	Errors ErrorList
	// Warnings are notes about accepted resources.
	Warnings ErrorList
	// DamagedFiles are the files some of whose content could not be read
	// as resources (a read error, a YAML syntax error that stopped the
	// parsing, a document without a readable kind or name): what they hold
	// is unknown, so their last good resources are kept. Sorted.
	DamagedFiles []string
	// Statuses are the statuses of the resources, one per document that
	// names a resource (and per last good resource kept from a file that
	// could not be read), sorted by kind, namespace, name, file and line.
	Statuses []ResourceStatus
}

// Evaluate validates a policy as Load does, then accepts or rejects each
// resource on its own, as the Gateway API does:
//
//   - an error in a resource itself rejects it: it is not in Result.Set;
//   - a reference that does not resolve (a backendRef to a Service that
//     does not exist, of an unknown kind; a SecurityPolicy target that does
//     not exist) leaves the resource accepted: that reference resolves to
//     nothing (its share of the rule's requests is answered 500) and its status says why;
//   - a route parentRef that does not attach (no such parent, a listener
//     that does not allow the route's namespace, no hostname in common)
//     leaves the route accepted for its other parents;
//   - an invalid listener is not programmed; its Gateway keeps the others
//     (a Gateway without a valid listener is rejected).
//
// Rejected resources are taken out and the rest validated again, until
// nothing more is rejected (a rejected Service leaves the routes to it
// with unresolved backends, a rejected Gateway its routes unattached).
//
// A resource rejected now that in.LastGood holds keeps its last good
// version in the Set, unless that version fails against the current set.
// So do the resources in.LastGood had from a file that could not be read,
// whose YAML parsing stopped at a syntax error, or that has a document
// without a readable kind or name, and that this policy does not define.
//
// Security fails closed: a rejected SecurityPolicy without a last good
// version is replaced by one that denies every request to those of its
// targets that exist; a rejected MeshConfig without a last good version
// leaves nothing to serve (Result.Set is nil).
func Evaluate(in Input) *Result {
	return evaluate(in, decodeFile, true)
}

// candidate is a resource that may go into the Set: one a document of this
// policy defines, a last good version, or a fail-closed SecurityPolicy.
type candidate struct {
	key       resourceKey
	res       any
	kind      *kind
	source    Source
	malformed bool
	// duplicate: the document repeats the identity of an earlier one.
	duplicate bool
	// lastGood: from Input.LastGood; failClosed: made for a rejected
	// SecurityPolicy (of the same key).
	lastGood, failClosed bool
	// fromDamagedFile: a last good version kept because its file could not
	// be read as resources (no document of this policy defines its key).
	fromDamagedFile bool

	// decodeErrs are the errors of its document's decoding.
	decodeErrs []*Error
	// rejected: the problems that rejected it (nil while accepted).
	rejected []*Error
	// droppedLastGood is its last good version, rejected too.
	droppedLastGood *candidate
	// ignored says why the resource is not meshgate's (a Gateway of a
	// GatewayClass of another controller), or is "".
	ignored string
	// generation is its document's metadata.generation (1 when not
	// written): the observedGeneration of its status.
	generation int64
}

func (c *candidate) doc() documentID { return documentID{c.source.File, c.source.Line} }

// passState is what one validation pass records besides errors.
type passState struct {
	// badListeners are the listeners, by Gateway or ListenerSet and index,
	// that are not programmed.
	badListeners map[listenerOwner]map[int]bool
	// attached counts the routes attached to each listener, by Gateway or
	// ListenerSet and listener index.
	attached map[listenerOwner][]int32
	// attachedSets counts the ListenerSets attached to each Gateway;
	// setAttached marks them.
	attachedSets map[*Gateway]int32
	setAttached  map[*ListenerSet]bool
	// rejected are the resources rejected by an earlier pass, for messages.
	rejected map[resourceKey]Source
	// ignored are the Gateways of other controllers' GatewayClasses, with
	// why.
	ignored map[resourceKey]string
	// secrets are the Secrets checked as certificates (secretCertificate).
	secrets map[*Secret]*secretCheck
}

// evaluation is one Evaluate.
type evaluation struct {
	in      Input
	decoded *loader
	// ignored: see passState.ignored.
	ignored map[resourceKey]string
	// withStatuses: write Result.Statuses (Load does not need them).
	withStatuses bool
	// openAPI: the OpenAPI documents read, once per evaluation.
	openAPI openAPIReads
	// consumerFiles: the API consumers files read, once per evaluation.
	consumerFiles consumerFileReads
}

func evaluate(in Input, decode func(File) *fileEffect, withStatuses bool) *Result {
	e := &evaluation{in: in, decoded: decodeInput(in, decode), withStatuses: withStatuses}
	return e.run()
}

// pass validates live as one set and returns the loader holding the set
// and its errors.
func (e *evaluation) pass(live []*candidate, rejected map[resourceKey]Source) *loader {
	p := &loader{
		malformed: make(map[resourceKey]bool),
		dropped:   e.decoded.dropped,
		pass:      passState{rejected: rejected, ignored: e.ignored},
	}
	p.set.Files = e.decoded.set.Files
	p.openAPI = &e.openAPI
	p.consumerFiles = &e.consumerFiles
	if e.in.LastGood != nil {
		p.lastGoodOpenAPI = e.in.LastGood.OpenAPIDocuments
		p.lastGoodConsumers = e.in.LastGood.APIKeyConsumerFiles
	}
	for _, c := range live {
		if c.malformed {
			p.malformed[c.key] = true
		}
		if tp, ok := c.res.(*TrafficPolicy); ok && c.lastGood {
			if p.lastGoodTraffic == nil {
				p.lastGoodTraffic = map[*TrafficPolicy]bool{}
			}
			p.lastGoodTraffic[tp] = true
		}
		if sp, ok := c.res.(*SecurityPolicy); ok && c.lastGood {
			if p.lastGoodSecurity == nil {
				p.lastGoodSecurity = map[*SecurityPolicy]bool{}
			}
			p.lastGoodSecurity[sp] = true
		}
		c.kind.add(p, c.res)
	}
	p.validate()
	return p
}

// attribute maps the errors of a pass to the candidates they are about.
func attribute(errs ErrorList, cands []*candidate) map[*candidate][]*Error {
	byDoc := make(map[documentID][]*candidate, len(cands))
	for _, c := range cands {
		byDoc[c.doc()] = append(byDoc[c.doc()], c)
	}
	out := make(map[*candidate][]*Error)
	for _, err := range errs {
		for _, c := range byDoc[err.attr.doc] {
			out[c] = append(out[c], err)
		}
	}
	return out
}

// invalidErrors are the problems that reject c, given its errors in a pass.
func invalidErrors(c *candidate, errs []*Error, p *loader) []*Error {
	out := slices.Clone(c.decodeErrs)
	for _, err := range errs {
		if err.attr.class == classInvalid {
			out = append(out, err)
		}
	}
	if o, ok := c.res.(listenerOwner); ok && len(out) == 0 && o.listenerCount() > 0 && len(p.pass.badListeners[o]) == o.listenerCount() {
		// Not one listener can be programmed.
		for _, err := range errs {
			if err.attr.class == classListener {
				out = append(out, err)
			}
		}
	}
	return out
}

func (e *evaluation) run() *Result {
	l := e.decoded
	res := &Result{}
	ignoredCands := e.ignoreOtherControllers(res)
	all := slices.Concat(l.cands, l.dups, ignoredCands)
	var decodeErrs ErrorList
	for c, errs := range attribute(l.errs, all) {
		c.decodeErrs = errs
	}
	for _, err := range l.errs {
		// The problems of another controller's Gateway are not meshgate's.
		if !slices.ContainsFunc(ignoredCands, func(c *candidate) bool { return c.doc() == err.attr.doc }) {
			decodeErrs = append(decodeErrs, err)
		}
	}

	// The first pass validates everything, as Load always did: its errors
	// are Result.Errors.
	p := e.pass(l.cands, nil)
	res.Errors = decodeErrs
	res.Warnings = append(res.Warnings, p.warnings...)
	sortErrors(res.Warnings)
	for _, err := range p.errs {
		if !err.attr.cascade {
			res.Errors = append(res.Errors, err)
		}
	}
	sortErrors(res.Errors)

	lastGood := indexSet(e.in.LastGood)
	live := slices.Clone(l.cands)
	rejectedKeys := make(map[resourceKey]Source)
	byKey := make(map[resourceKey]*candidate, len(l.cands)) // this policy's candidates
	for _, c := range l.cands {
		byKey[c.key] = c
	}
	if len(lastGood) > 0 {
		// The last good resources of files whose content was lost.
		for _, key := range sortedKeys(lastGood) {
			lg := lastGood[key]
			if _, defined := l.defined[key]; !defined && l.damaged[lg.source.File] {
				lg.fromDamagedFile = true
				live = append(live, lg)
			}
		}
		if len(live) > len(l.cands) {
			p = e.pass(live, rejectedKeys)
		}
	}
	failClosedDone, failClosedRejected := false, false
	// Every round rejects at least one candidate or adds the fail-closed
	// policies once: it ends.
	for {
		errs := attribute(p.errs, live)
		var next []*candidate
		changed := false
		for _, c := range live {
			inv := invalidErrors(c, errs[c], p)
			if len(inv) == 0 {
				next = append(next, c)
				continue
			}
			changed = true
			c.rejected = inv
			if c.failClosed {
				failClosedRejected = true
				continue
			}
			if c.lastGood {
				// Dropped: it fails against the current set.
				if cur := byKey[c.key]; cur != nil {
					cur.droppedLastGood = c
				}
				continue
			}
			rejectedKeys[c.key] = c.source
			if lg := lastGood[c.key]; lg != nil {
				next = append(next, lg)
			}
		}
		if !changed && !failClosedDone {
			failClosedDone = true
			next = append(next, e.failClosed(l.cands, live, p)...)
			changed = len(next) > len(live)
		}
		if !changed {
			break
		}
		live = next
		p = e.pass(live, rejectedKeys)
	}

	set := &p.set
	if failClosedRejected {
		// Not expected (a deny-all policy of existing targets is valid),
		// but what it was to close must not open: nothing new is served.
		set = nil
	}
	if set != nil && set.MeshConfig == nil && slices.ContainsFunc(all, func(c *candidate) bool {
		return c.kind.name == KindMeshConfig && c.rejected != nil
	}) {
		set = nil // a rejected MeshConfig without a last good version
	}
	if set != nil {
		set.Gateways = programmedListeners(set.Gateways, p.pass.badListeners)
		set.ListenerSets = programmedListenerSetListeners(set.ListenerSets, p.pass.badListeners)
	}
	res.Set = set
	for f := range l.damaged {
		res.DamagedFiles = append(res.DamagedFiles, f)
	}
	slices.Sort(res.DamagedFiles)
	if e.withStatuses {
		res.Statuses = e.statuses(all, live, p)
	}
	return res
}

// ignoreOtherControllers takes out of the candidates the Gateways whose
// gatewayClassName names a GatewayClass of another controller (a Gateway
// naming a class that is not defined is meshgate's), with a warning each,
// and returns them.
func (e *evaluation) ignoreOtherControllers(res *Result) []*candidate {
	l := e.decoded
	controllers := map[string]string{}
	for _, c := range l.cands {
		if gc, ok := c.res.(*GatewayClass); ok {
			controllers[gc.Name] = string(gc.Spec.ControllerName)
		}
	}
	var ignored []*candidate
	l.cands = slices.DeleteFunc(l.cands, func(c *candidate) bool {
		g, ok := c.res.(*Gateway)
		if !ok {
			return false
		}
		controller, defined := controllers[string(g.Spec.GatewayClassName)]
		if !defined || controller == ControllerName {
			return false
		}
		c.ignored = fmt.Sprintf("its GatewayClass %q has controllerName %q (meshgate's is %s)", g.Spec.GatewayClassName, controller, ControllerName)
		if e.ignored == nil {
			e.ignored = make(map[resourceKey]string)
		}
		e.ignored[c.key] = c.ignored
		res.Warnings = append(res.Warnings, &Error{File: g.Source.File, Line: g.Source.LineOf("spec.gatewayClassName"), Field: "spec.gatewayClassName",
			Message: fmt.Sprintf("gateway %q is not served by meshgate: %s", g.Name, c.ignored)})
		ignored = append(ignored, c)
		return true
	})
	return ignored
}

// failClosed makes, for every rejected SecurityPolicy of this policy that
// has no version serving, a policy that denies every request to those of
// its targets that exist in the set of the pass p.
func (e *evaluation) failClosed(cands, live []*candidate, p *loader) []*candidate {
	serving := make(map[resourceKey]bool, len(live))
	for _, c := range live {
		serving[c.key] = true
	}
	var out []*candidate
	for _, c := range cands {
		sp, ok := c.res.(*SecurityPolicy)
		if !ok || c.rejected == nil || serving[c.key] {
			continue
		}
		deny := &SecurityPolicy{Name: sp.Name, Namespace: sp.Namespace, Source: sp.Source, failClosed: true,
			Spec: SecurityPolicySpec{Rules: []SecurityRule{{Name: "fail-closed", Action: ActionDeny}}}}
		seen := make(map[string]bool)
		for _, ref := range sp.Spec.TargetRefs {
			found := false
			switch ref.Kind {
			case KindService:
				found = p.set.LookupService(sp.Namespace, ref.Name) != nil
			case KindGateway:
				found = p.set.LookupGateway(sp.Namespace, ref.Name) != nil
			case KindHTTPRoute:
				found = slices.ContainsFunc(p.set.HTTPRoutes, func(r *HTTPRoute) bool { return r.Namespace == sp.Namespace && r.Name == ref.Name })
			}
			if found && !seen[ref.Kind+"/"+ref.Name] {
				seen[ref.Kind+"/"+ref.Name] = true
				deny.Spec.TargetRefs = append(deny.Spec.TargetRefs, PolicyTargetRef{Kind: ref.Kind, Name: ref.Name})
			}
		}
		if len(deny.Spec.TargetRefs) == 0 {
			continue
		}
		out = append(out, &candidate{key: c.key, res: deny, kind: c.kind, source: c.source, failClosed: true})
	}
	return out
}

// FailClosed reports whether the policy was made by Evaluate in place of a
// rejected SecurityPolicy: it denies every request to its targets.
func (sp *SecurityPolicy) FailClosed() bool { return sp.failClosed }

// programmedListeners returns gateways with, in place of each one that has
// listeners not programmed, a copy without them.
func programmedListeners(gateways []*Gateway, bad map[listenerOwner]map[int]bool) []*Gateway {
	if len(bad) == 0 {
		return gateways
	}
	out := slices.Clone(gateways)
	for i, g := range gateways {
		if len(bad[g]) == 0 {
			continue
		}
		c := *g
		c.Spec.Listeners = nil
		for j, ls := range g.Spec.Listeners {
			if !bad[g][j] {
				c.Spec.Listeners = append(c.Spec.Listeners, ls)
			}
		}
		c.original = g
		out[i] = &c
	}
	return out
}

// indexSet lists the resources of a set (but fail-closed policies) as last
// good candidates, by key.
func indexSet(s *Set) map[resourceKey]*candidate {
	if s == nil {
		return nil
	}
	out := make(map[resourceKey]*candidate)
	add := func(kindName, ns, name string, res any, src Source) {
		key := resourceKey{kindName, ns, name}
		out[key] = &candidate{key: key, res: res, kind: kindNamed(kindName), source: src, lastGood: true}
	}
	for _, g := range s.Gateways {
		if g.original != nil {
			g = g.original // every listener: the current set decides again which are programmed
		}
		add(KindGateway, g.Namespace, g.Name, g, g.Source)
	}
	for _, r := range s.HTTPRoutes {
		add(r.RouteKind(), r.Namespace, r.Name, r, r.Source)
	}
	for _, r := range s.TCPRoutes {
		add(KindTCPRoute, r.Namespace, r.Name, r, r.Source)
	}
	for _, r := range s.TLSRoutes {
		add(KindTLSRoute, r.Namespace, r.Name, r, r.Source)
	}
	for _, svc := range s.Services {
		add(KindService, svc.Namespace, svc.Name, svc, svc.Source)
	}
	for _, sp := range s.SecurityPolicies {
		if !sp.failClosed {
			add(KindSecurityPolicy, sp.Namespace, sp.Name, sp, sp.Source)
		}
	}
	for _, tp := range s.TrafficPolicies {
		add(KindTrafficPolicy, tp.Namespace, tp.Name, tp, tp.Source)
	}
	for _, gc := range s.GatewayClasses {
		add(KindGatewayClass, "", gc.Name, gc, gc.Source)
	}
	for _, g := range s.ReferenceGrants {
		add(KindReferenceGrant, g.Namespace, g.Name, g, g.Source)
	}
	for _, ns := range s.Namespaces {
		add(KindNamespace, "", ns.Name, ns, ns.Source)
	}
	for _, sec := range s.Secrets {
		add(KindSecret, sec.Namespace, sec.Name, sec, sec.Source)
	}
	for _, a := range s.ACMEIssuers {
		add(KindACMEIssuer, a.Namespace, a.Name, a, a.Source)
	}
	for _, p := range s.BackendTLSPolicies {
		add(KindBackendTLSPolicy, p.Namespace, p.Name, p, p.Source)
	}
	for _, cm := range s.ConfigMaps {
		add(KindConfigMap, cm.Namespace, cm.Name, cm, cm.Source)
	}
	for _, ls := range s.ListenerSets {
		if ls.original != nil {
			ls = ls.original
		}
		add(KindListenerSet, ls.Namespace, ls.Name, ls, ls.Source)
	}
	if mc := s.MeshConfig; mc != nil {
		add(KindMeshConfig, mc.Namespace, mc.Name, mc, mc.Source)
	}
	return out
}

func sortedKeys(m map[resourceKey]*candidate) []resourceKey {
	keys := make([]resourceKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b resourceKey) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	return keys
}

// now is when statuses are written.
func now() time.Time { return time.Now().UTC().Truncate(time.Second) }
