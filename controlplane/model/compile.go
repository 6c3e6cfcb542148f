package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/policy"
)

// DefaultGatewayAddress is where a Gateway without an IPAddress binds.
const DefaultGatewayAddress = "127.0.0.1"

// Compile turns a validated policy set into a Model. It assumes the set passed
// policy validation (references exist, regexes compile); it never panics. A
// resource it still cannot represent (a filter kind meshgate does not
// implement: a bug, as the policy rejects those) is left out of the model
// and listed in Model.Problems: a Service or HTTPRoute is not served, a
// SecurityPolicy fails closed (its targets deny every request). Only what
// cannot be left out, a MeshConfig, is an error. A nil set compiles to an
// empty model.
func Compile(set *policy.Set) (*Model, error) {
	return CompileWith(set, CompileOptions{})
}

// CompileOptions are what the compiler cannot learn from a policy.Set.
type CompileOptions struct {
	// PolicyVersion becomes the model's PolicyVersion: PolicyVersion of the
	// policy documents the set was loaded from, without the discovered
	// services (the set does not tell them apart).
	PolicyVersion string
	// Addressing is the range of the services' virtual IPs and their DNS
	// domain; the zero value means the defaults. The caller checks it
	// (ServiceAddressing.Check): an invalid one is an error of
	// CompileWith.
	Addressing ServiceAddressing
}

// PolicyVersion identifies policy documents by the name and content of
// every file (or KV entry) holding them, in order: any edit changes it.
func PolicyVersion(files []policy.File) string {
	h := sha256.New()
	for _, f := range files {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(f.Name)))
		h.Write(n[:])
		h.Write([]byte(f.Name))
		binary.LittleEndian.PutUint64(n[:], uint64(len(f.Data)))
		h.Write(n[:])
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// CompileWith is Compile with options. The endpoints of the set's Services
// (their spec.endpoints) make the model's endpoint index; those of
// discovered services are added with WithDiscovered.
func CompileWith(set *policy.Set, opts CompileOptions) (*Model, error) {
	if set == nil {
		set = &policy.Set{}
	}
	if err := opts.Addressing.Check(); err != nil {
		return nil, err
	}
	c := &compiler{
		set:        set,
		addressing: opts.Addressing.withDefaults(),
		m: &Model{
			PolicyVersion: opts.PolicyVersion,
			services:      map[NamespacedName]*Service{},
			gateways:      map[NamespacedName]*Gateway{},
			regexps:       map[string]*regexp.Regexp{},
			static:        map[string][]*Endpoint{},
		},
	}
	for _, step := range compileSteps {
		if err := step.compile(c); err != nil {
			return nil, err
		}
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	m := c.m
	if err := m.hashRouting(); err != nil {
		return nil, err
	}
	if m.Mesh.OutboundScope == OutboundScopeAuthorized {
		m.reach = m.buildReachIndex()
	}
	m.endpoints = m.static
	if err := m.hashEndpoints(); err != nil {
		return nil, err
	}
	return m, nil
}

// compiler is one compilation of a set.
type compiler struct {
	set *policy.Set
	m   *Model
	// addressing is how the services are addressed (vip.go).
	addressing ServiceAddressing
	// targets are the enforcement points of the compiled SecurityPolicies.
	targets *policyTargets
	// routes are the compiled HTTPRoutes, attached to the services (mesh
	// routes) when compiled and to the gateways after.
	routes []*compiledRoute
	// errs are the errors of the input the compiler cannot represent and
	// cannot leave out (the MeshConfig); the compilation goes on to report
	// them all.
	errs []error
}

// CompileProblem is a resource of the set that the compiler could not
// represent, left out of the model (a SecurityPolicy: replaced by a policy
// that denies every request to its targets). The policy validated the
// resource: a problem is a bug of meshgate.
type CompileProblem struct {
	Kind string
	NamespacedName
	Source policy.Source
	Err    error
}

// leaveOut records that the resource of kind named name is left out of
// the model because of err.
func (c *compiler) leaveOut(kind string, name NamespacedName, src policy.Source, err error) {
	c.m.Problems = append(c.m.Problems, CompileProblem{Kind: kind, NamespacedName: name, Source: src, Err: err})
}

// compileSteps compile a set kind by kind (policy.Kinds: a test requires a
// step for each), in the order each needs the others: the mesh settings and
// the policies' targets before the services and routes they apply to, the
// services before the routes that reference them, the routes before the
// gateways they attach to. A step's error stops the compilation; the
// errors it adds to the compiler's are all reported at the end.
var compileSteps = [...]struct {
	kind    string
	compile func(c *compiler) error
}{
	{policy.KindMeshConfig, (*compiler).meshConfig},
	{policy.KindSecurityPolicy, (*compiler).securityPolicies},
	{policy.KindService, (*compiler).services},
	{policy.KindHTTPRoute, (*compiler).httpRoutes},
	// GRPCRoutes are in the set's HTTPRoutes (policy.KindGRPCRoute),
	// compiled by the HTTPRoute step.
	{policy.KindGRPCRoute, func(*compiler) error { return nil }},
	{policy.KindGateway, (*compiler).gateways},
	{policy.KindTrafficPolicy, (*compiler).trafficPolicies},
	// Policy resolves GatewayClasses (the Gateways of other controllers'
	// classes are not in the set); ReferenceGrants are read through
	// policy.Set.BackendPermitted by the HTTPRoute step.
	{policy.KindGatewayClass, func(*compiler) error { return nil }},
	{policy.KindReferenceGrant, func(*compiler) error { return nil }},
	// Namespaces' labels are read through policy.Set.ListenerAllows by the
	// Gateway step.
	{policy.KindNamespace, func(*compiler) error { return nil }},
	// The Gateway step adds the listeners of a Gateway's ListenerSets
	// (policy.Set.ListenerSetsOf) to its own.
	{policy.KindListenerSet, func(*compiler) error { return nil }},
	// TLS Secrets are read through policy.Set.ListenerCertificates by the
	// Gateway step (the certificates of HTTPS listeners).
	{policy.KindSecret, func(*compiler) error { return nil }},
	// ACMEIssuers are read through policy.Set.ListenerACMEIssuer by the
	// Gateway step (the HTTPS listeners whose certificates are obtained
	// over ACME).
	{policy.KindACMEIssuer, func(*compiler) error { return nil }},
	{policy.KindBackendTLSPolicy, (*compiler).backendTLSPolicies},
	// ConfigMaps are read through policy.Set.BackendTLSFor by the
	// BackendTLSPolicy step (their CA bundles).
	{policy.KindConfigMap, func(*compiler) error { return nil }},
	// TCPRoutes and TLSRoutes are read by the Gateway step (l4.go).
	{policy.KindTCPRoute, func(*compiler) error { return nil }},
	{policy.KindTLSRoute, func(*compiler) error { return nil }},
}

func (c *compiler) meshConfig() error {
	mesh, err := compileMesh(c.set.MeshConfig)
	if err != nil {
		c.errs = append(c.errs, err)
	}
	c.m.Mesh = mesh
	return nil
}

func (c *compiler) securityPolicies() error {
	c.targets = c.m.compilePolicies(c.set.SecurityPolicies, c.set.APIKeyFileConsumers, c.leaveOut)
	return nil
}

func (c *compiler) services() error {
	m := c.m
	for _, ps := range c.set.Services {
		svc, err := compileService(ps, m.static)
		if err != nil {
			c.leaveOut(policy.KindService, NamespacedName{Namespace: orDefault(ps.Namespace), Name: ps.Name}, ps.Source, err)
			continue
		}
		svc.MTLSMode = cmp.Or(c.targets.mtls[svc.NamespacedName], m.Mesh.MTLSMode)
		svc.Authorization = m.authorization(c.targets.services[svc.NamespacedName])
		svc.Authentication = authentication(c.targets.services[svc.NamespacedName])
		m.Services = append(m.Services, svc)
		m.services[svc.NamespacedName] = svc
	}
	slices.SortFunc(m.Services, func(a, b *Service) int { return compareNames(a.NamespacedName, b.NamespacedName) })
	assignVIPs(m.Services, c.addressing.VIPRange)
	for _, svc := range m.Services {
		svc.Hostnames = servicemeta.Hostnames(svc.Namespace, svc.Name, c.addressing.DNSDomain)
	}
	return nil
}

// httpRoutes compiles the HTTPRoutes, with the authorization of their
// policies, and attaches those whose parent is a Service to its ports.
func (c *compiler) httpRoutes() error {
	m := c.m
	routes := slices.Clone(c.set.HTTPRoutes)
	slices.SortStableFunc(routes, func(a, b *policy.HTTPRoute) int {
		return compareRouteAge(a.CreationTimestamp.Time, routeName(a), b.CreationTimestamp.Time, routeName(b))
	})
	for _, svc := range m.Services {
		svc.ExtAuth = c.compileSecurityExtAuth(c.targets.services[svc.NamespacedName])
	}
	c.routes = make([]*compiledRoute, 0, len(routes))
	for _, r := range routes {
		permitted := func(routeNamespace, serviceNamespace, serviceName string) bool {
			return c.set.RouteBackendPermitted(r.RouteKind(), routeNamespace, serviceNamespace, serviceName)
		}
		if !r.GatewayBound() {
			// A mesh route may send to any namespace (GEP-1294).
			permitted = func(string, string, string) bool { return true }
		}
		cr, err := m.compileRoute(r, permitted)
		if err != nil {
			c.leaveOut(r.RouteKind(), routeName(r), r.Source, err)
			continue
		}
		if policies := c.targets.routes[cr.name]; len(policies) > 0 {
			authz := m.authorization(policies)
			extAuth := c.compileSecurityExtAuth(policies)
			authn := authentication(policies)
			for _, rule := range cr.rules {
				rule.Authorization = authz
				rule.Authentication = authn
				if rule.Action.ExtAuth == nil {
					rule.Action.ExtAuth = extAuth
				}
			}
		}
		c.routes = append(c.routes, cr)
	}
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			for _, cr := range c.routes {
				if !attachesToPort(cr, svc, port) {
					continue
				}
				rules := make([]*Rule, 0, len(cr.rules))
				for _, r := range cr.rules {
					rules = append(rules, ruleForPort(r, svc, port))
				}
				// GEP-1294: a route in the Service's namespace is a producer
				// route, for every caller; one in another namespace is a
				// consumer route, for the callers of its namespace only.
				if cr.name.Namespace == svc.Namespace {
					port.Routes = append(port.Routes, rules...)
					continue
				}
				if port.ConsumerRoutes == nil {
					port.ConsumerRoutes = map[string][]*Rule{}
				}
				port.ConsumerRoutes[cr.name.Namespace] = append(port.ConsumerRoutes[cr.name.Namespace], rules...)
			}
			sortRules(port.Routes)
			for _, rules := range port.ConsumerRoutes {
				sortRules(rules)
			}
		}
	}
	return nil
}

// attachesToPort reports whether one of the route's parentRefs is the
// Service svc and selects its port: every port, or the one the parentRef
// names by port number (port) or by port name (sectionName), both when
// both are given.
func attachesToPort(cr *compiledRoute, svc *Service, port *ServicePort) bool {
	for _, ref := range cr.route.Spec.ParentRefs {
		if !isServiceRef(ref.Group, ref.Kind) {
			continue
		}
		if (NamespacedName{Namespace: refNamespace(ref.Namespace, cr.name.Namespace), Name: string(ref.Name)}) != svc.NamespacedName {
			continue
		}
		if ref.Port != nil && int32(*ref.Port) != port.Number {
			continue
		}
		if ref.SectionName != nil && string(*ref.SectionName) != port.Name {
			continue
		}
		return true
	}
	return false
}

// ruleForPort is rule as attached to a port of a Service. A mesh rule that
// neither redirects nor names a backend forwards to the port it is attached
// to (the parent Service's): a mesh route augments the calls to its Service,
// so a rule that only filters (adds headers, rewrites) keeps sending them
// where they were going. That rule is a copy; every other is shared.
func ruleForPort(rule *Rule, svc *Service, port *ServicePort) *Rule {
	if rule.Action.Redirect != nil || len(rule.Action.Backends) > 0 {
		return rule
	}
	action := *rule.Action
	action.Backends = []*Backend{{Service: svc.NamespacedName, Port: port.Number, Weight: 1, Cluster: port.Cluster}}
	r := *rule
	r.Action = &action
	return &r
}

// gateways compiles the Gateways with the routes attached to them.
func (c *compiler) gateways() error {
	m := c.m
	for _, pg := range c.set.Gateways {
		gw := m.compileGateway(pg, c.routes, c.set)
		gw.Authorization = m.authorization(c.targets.gateways[gw.NamespacedName])
		gw.ExtAuth = c.compileSecurityExtAuth(c.targets.gateways[gw.NamespacedName])
		gw.Authentication = authentication(c.targets.gateways[gw.NamespacedName])
		m.Gateways = append(m.Gateways, gw)
		m.gateways[gw.NamespacedName] = gw
	}
	slices.SortFunc(m.Gateways, func(a, b *Gateway) int { return compareNames(a.NamespacedName, b.NamespacedName) })
	return nil
}

// compareRouteAge orders routes as the Gateway API resolves their
// conflicts: the oldest by creation time first (a route without one, the
// zero time, counts as the oldest), then by namespace and name.
func compareRouteAge(aCreated time.Time, a NamespacedName, bCreated time.Time, b NamespacedName) int {
	return cmp.Or(aCreated.Compare(bCreated), compareNames(a, b))
}

func compareNames(a, b NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

func orDefault(ns string) string {
	if ns == "" {
		return policy.DefaultNamespace
	}
	return ns
}

func routeName(r *policy.HTTPRoute) NamespacedName {
	return NamespacedName{Namespace: orDefault(r.Namespace), Name: r.Name}
}

func refNamespace(ns *gwapiv1.Namespace, def string) string {
	if ns == nil || *ns == "" {
		return def
	}
	return string(*ns)
}

// isServiceRef reports whether a reference's kind names a Service, in the core
// group (GAMMA) or meshgate's.
func isServiceRef(group *gwapiv1.Group, kind *gwapiv1.Kind) bool {
	if kind == nil || string(*kind) != policy.KindService {
		return false
	}
	return group == nil || *group == "" || *group == "core" || *group == policy.MeshgateGroup
}

// isListenerOwnerRef reports whether a parentRef's group and kind name a
// Gateway (ownerKind policy.KindGateway: the kind's default) or a
// ListenerSet (policy.KindListenerSet).
func isListenerOwnerRef(group *gwapiv1.Group, kind *gwapiv1.Kind, ownerKind string) bool {
	k := policy.KindGateway
	if kind != nil {
		k = string(*kind)
	}
	return k == ownerKind && (group == nil || *group == gwapiv1.GroupName)
}

// compileService compiles a Service and adds its endpoints to index.
func compileService(ps *policy.Service, index map[string][]*Endpoint) (*Service, error) {
	svc := &Service{NamespacedName: NamespacedName{Namespace: orDefault(ps.Namespace), Name: ps.Name}}
	for _, pp := range ps.Spec.Ports {
		proto := ProtocolHTTP
		switch {
		case pp.UpstreamProtocol() == policy.ProtocolHTTP2:
			proto = ProtocolHTTP2
		case pp.Protocol == policy.ProtocolTCP:
			proto = ProtocolTCP
		}
		svc.Ports = append(svc.Ports, &ServicePort{
			Name:     pp.Name,
			Number:   pp.Port,
			Protocol: proto,
			Cluster:  ClusterName(svc.Namespace, svc.Name, pp.Port),
		})
	}
	if len(svc.Ports) == 0 {
		return nil, fmt.Errorf("service %s: no ports", svc.NamespacedName)
	}
	endpoints := map[*ServicePort][]*Endpoint{}
	for i, pe := range ps.Spec.Endpoints {
		host, portText, err := net.SplitHostPort(pe.Address)
		if err != nil {
			return nil, fmt.Errorf("service %s: endpoints[%d].address %q: %w", svc.NamespacedName, i, pe.Address, err)
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("service %s: endpoints[%d].address %q: invalid port", svc.NamespacedName, i, pe.Address)
		}
		sp := endpointPort(svc, pe.Port)
		if sp == nil {
			return nil, fmt.Errorf("service %s: endpoints[%d].port %q: no such service port", svc.NamespacedName, i, pe.Port)
		}
		endpoints[sp] = append(endpoints[sp], &Endpoint{Host: host, Port: uint32(port), Labels: pe.Labels, Sidecar: pe.Sidecar})
	}
	for sp, eps := range endpoints {
		index[sp.Cluster] = eps
	}
	return svc, nil
}

// endpointPort finds the service port an endpoint names, by name or number;
// an empty reference means the only port.
func endpointPort(svc *Service, ref string) *ServicePort {
	if ref == "" {
		if len(svc.Ports) == 1 {
			return svc.Ports[0]
		}
		return nil
	}
	for _, p := range svc.Ports {
		if p.Name == ref || strconv.Itoa(int(p.Number)) == ref {
			return p
		}
	}
	return nil
}

// compiledRoute is an HTTPRoute whose rules are compiled, not yet attached.
type compiledRoute struct {
	name  NamespacedName
	route *policy.HTTPRoute
	rules []*Rule
}

// compileRoute compiles a route; a backendRef that permitted refuses
// (another namespace without a ReferenceGrant) resolves to nothing.
func (m *Model) compileRoute(r *policy.HTTPRoute, permitted func(routeNamespace, serviceNamespace, serviceName string) bool) (*compiledRoute, error) {
	cr := &compiledRoute{name: routeName(r), route: r}
	var sampling *float64
	if pct, ok, err := policy.RouteTracingSampling(r.Annotations); err != nil {
		return nil, fmt.Errorf("%s %s: metadata.annotations: %w", strings.ToLower(r.RouteKind()), cr.name, err)
	} else if ok {
		sampling = &pct
	}
	for ri, rule := range r.Spec.Rules {
		where := fmt.Sprintf("%s %s: spec.rules[%d]", strings.ToLower(r.RouteKind()), cr.name, ri)
		action, err := m.compileAction(cr.name.Namespace, rule, permitted)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwapiv1.HTTPRouteMatch{{}}
		}
		for mi, match := range matches {
			compiled := compileMatch(match)
			compiled.GRPC = r.GRPC != nil
			cr.rules = append(cr.rules, &Rule{
				Route:           cr.name,
				routeCreated:    r.CreationTimestamp.Time,
				RuleIndex:       ri,
				MatchIndex:      mi,
				Match:           compiled,
				Action:          action,
				TracingSampling: sampling,
			})
		}
	}
	return cr, nil
}

func compileMatch(in gwapiv1.HTTPRouteMatch) Match {
	out := Match{Path: PathMatch{Kind: PathPrefix, Value: "/"}}
	if in.Path != nil {
		if in.Path.Type != nil {
			out.Path.Kind = PathMatchKind(*in.Path.Type)
		}
		if in.Path.Value != nil {
			out.Path.Value = *in.Path.Value
		}
	}
	if in.Method != nil {
		out.Method = string(*in.Method)
	}
	for _, h := range in.Headers {
		out.Headers = append(out.Headers, ValueMatch{
			Name:  strings.ToLower(string(h.Name)),
			Value: h.Value,
			Regex: h.Type != nil && *h.Type == gwapiv1.HeaderMatchRegularExpression,
		})
	}
	for _, q := range in.QueryParams {
		out.QueryParams = append(out.QueryParams, ValueMatch{
			Name:  string(q.Name),
			Value: q.Value,
			Regex: q.Type != nil && *q.Type == gwapiv1.QueryParamMatchRegularExpression,
		})
	}
	return out
}

func (m *Model) compileAction(routeNamespace string, rule gwapiv1.HTTPRouteRule, permitted func(routeNamespace, serviceNamespace, serviceName string) bool) (*Action, error) {
	a := &Action{}
	if rule.SessionPersistence != nil {
		return nil, errors.New("sessionPersistence: not supported")
	}
	if t := rule.Timeouts; t != nil {
		if t.Request != nil {
			d, err := time.ParseDuration(string(*t.Request))
			if err != nil {
				return nil, fmt.Errorf("timeouts.request: %w", err)
			}
			a.Timeout = &d
		}
		if t.BackendRequest != nil {
			d, err := time.ParseDuration(string(*t.BackendRequest))
			if err != nil {
				return nil, fmt.Errorf("timeouts.backendRequest: %w", err)
			}
			a.BackendRequestTimeout = &d
		}
	}
	if r := rule.Retry; r != nil {
		a.Retry = &Retry{Attempts: r.Attempts}
		for _, c := range r.Codes {
			a.Retry.Codes = append(a.Retry.Codes, int(c))
		}
		if r.Backoff != nil {
			d, err := time.ParseDuration(string(*r.Backoff))
			if err != nil {
				return nil, fmt.Errorf("retry.backoff: %w", err)
			}
			a.Retry.Backoff = &d
		}
	}
	for fi, f := range rule.Filters {
		if f.Type == gwapiv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
			a.Mirrors = append(a.Mirrors, m.compileMirror(routeNamespace, f.RequestMirror, permitted))
			continue
		}
		if f.Type == gwapiv1.HTTPRouteFilterExternalAuth && f.ExternalAuth != nil {
			a.ExtAuth = m.compileExtAuth(routeNamespace, f.ExternalAuth, permitted)
			continue
		}
		if err := compileFilter(a, f); err != nil {
			return nil, fmt.Errorf("filters[%d]: %w", fi, err)
		}
	}
	for bi, ref := range rule.BackendRefs {
		b := &Backend{
			Service: NamespacedName{Namespace: refNamespace(ref.Namespace, routeNamespace), Name: string(ref.Name)},
			Weight:  1,
		}
		if ref.Weight != nil {
			b.Weight = *ref.Weight
		}
		if ref.Port != nil {
			b.Port = *ref.Port
		}
		// A backendRef without kind names a Service.
		if ref.Kind == nil || isServiceRef(ref.Group, ref.Kind) {
			b.Cluster = m.backendCluster(routeNamespace, b, permitted)
		}
		for fi, f := range ref.Filters {
			var filtered Action
			if err := compileFilter(&filtered, f); err != nil || filtered.RequestHeaders == nil && filtered.ResponseHeaders == nil {
				return nil, fmt.Errorf("backendRefs[%d].filters[%d]: filter type %q: not supported", bi, fi, f.Type)
			}
			if filtered.RequestHeaders != nil {
				b.RequestHeaders = filtered.RequestHeaders
			}
			if filtered.ResponseHeaders != nil {
				b.ResponseHeaders = filtered.ResponseHeaders
			}
		}
		a.Backends = append(a.Backends, b)
	}
	return a, nil
}

// backendCluster is the cluster of the service port b names, or "" when it
// does not resolve (or is not permitted); it fills in b.Port when the
// reference has none and the service has one port.
func (m *Model) backendCluster(routeNamespace string, b *Backend, permitted func(routeNamespace, serviceNamespace, serviceName string) bool) string {
	if !permitted(routeNamespace, b.Service.Namespace, b.Service.Name) {
		return ""
	}
	svc := m.services[b.Service]
	if svc == nil {
		return ""
	}
	if b.Port == 0 && len(svc.Ports) == 1 {
		b.Port = svc.Ports[0].Number
	}
	if p := svc.Port(b.Port); p != nil {
		return p.Cluster
	}
	return ""
}

// compileMirror compiles a RequestMirror filter; its backend has no cluster
// when the reference does not resolve (the mirror is then left out).
func (m *Model) compileMirror(routeNamespace string, f *gwapiv1.HTTPRequestMirrorFilter, permitted func(routeNamespace, serviceNamespace, serviceName string) bool) *Mirror {
	ref := f.BackendRef
	mr := &Mirror{
		Backend:     Backend{Service: NamespacedName{Namespace: refNamespace(ref.Namespace, routeNamespace), Name: string(ref.Name)}},
		Numerator:   1,
		Denominator: 1,
	}
	if ref.Port != nil {
		mr.Backend.Port = *ref.Port
	}
	if ref.Kind == nil || isServiceRef(ref.Group, ref.Kind) {
		mr.Backend.Cluster = m.backendCluster(routeNamespace, &mr.Backend, permitted)
	}
	switch {
	case f.Percent != nil:
		mr.Numerator, mr.Denominator = *f.Percent, 100
	case f.Fraction != nil:
		mr.Numerator, mr.Denominator = f.Fraction.Numerator, 100
		if f.Fraction.Denominator != nil {
			mr.Denominator = *f.Fraction.Denominator
		}
	}
	return mr
}

func compileFilter(a *Action, f gwapiv1.HTTPRouteFilter) error {
	switch f.Type {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier == nil {
			return errors.New("requestHeaderModifier: missing")
		}
		a.RequestHeaders = compileHeaderModifier(f.RequestHeaderModifier)
	case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier == nil {
			return errors.New("responseHeaderModifier: missing")
		}
		a.ResponseHeaders = compileHeaderModifier(f.ResponseHeaderModifier)
	case gwapiv1.HTTPRouteFilterURLRewrite:
		if f.URLRewrite == nil {
			return errors.New("urlRewrite: missing")
		}
		a.Rewrite = &Rewrite{Path: compilePathModifier(f.URLRewrite.Path)}
		if f.URLRewrite.Hostname != nil {
			a.Rewrite.Hostname = string(*f.URLRewrite.Hostname)
		}
	case gwapiv1.HTTPRouteFilterCORS:
		if f.CORS == nil {
			return errors.New("cors: missing")
		}
		a.CORS = compileCORS(f.CORS)
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		rr := f.RequestRedirect
		if rr == nil {
			return errors.New("requestRedirect: missing")
		}
		a.Redirect = &Redirect{Path: compilePathModifier(rr.Path), StatusCode: 302}
		if rr.Scheme != nil {
			a.Redirect.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			a.Redirect.Hostname = string(*rr.Hostname)
		}
		if rr.Port != nil {
			a.Redirect.Port = *rr.Port
		}
		if rr.StatusCode != nil {
			a.Redirect.StatusCode = *rr.StatusCode
		}
	default:
		return fmt.Errorf("filter type %q: not supported", f.Type)
	}
	return nil
}

func compileHeaderModifier(in *gwapiv1.HTTPHeaderFilter) *HeaderModifier {
	out := &HeaderModifier{}
	for _, h := range in.Set {
		out.Set = append(out.Set, Header{Name: strings.ToLower(string(h.Name)), Value: h.Value})
	}
	for _, h := range in.Add {
		out.Add = append(out.Add, Header{Name: strings.ToLower(string(h.Name)), Value: h.Value})
	}
	for _, name := range in.Remove {
		out.Remove = append(out.Remove, strings.ToLower(name))
	}
	return out
}

func compilePathModifier(in *gwapiv1.HTTPPathModifier) *PathModifier {
	if in == nil {
		return nil
	}
	switch in.Type {
	case gwapiv1.FullPathHTTPPathModifier:
		if in.ReplaceFullPath != nil {
			return &PathModifier{Kind: ReplaceFullPath, Value: *in.ReplaceFullPath}
		}
	case gwapiv1.PrefixMatchHTTPPathModifier:
		if in.ReplacePrefixMatch != nil {
			return &PathModifier{Kind: ReplacePrefixMatch, Value: *in.ReplacePrefixMatch}
		}
	}
	return nil
}

// compileGateway groups a gateway's listeners by port and attaches the routes
// whose parentRefs select it.
func (m *Model) compileGateway(pg *policy.Gateway, routes []*compiledRoute, set *policy.Set) *Gateway {
	addrs := pg.BindAddresses()
	gw := &Gateway{
		NamespacedName:      NamespacedName{Namespace: orDefault(pg.Namespace), Name: pg.Name},
		Address:             addrs[0],
		AdditionalAddresses: addrs[1:],
	}
	// The Gateway's listeners, then those of its ListenerSets (GEP-1713:
	// the policy resolved their conflicts and left out the losers).
	byPort := map[int32][]ownedListener{}
	for i := range pg.Spec.Listeners {
		l := &pg.Spec.Listeners[i]
		byPort[l.Port] = append(byPort[l.Port], ownedListener{listener: l, kind: policy.KindGateway, owner: gw.NamespacedName,
			allows: func(routeNamespace string) bool { return set.ListenerAllows(pg, l, routeNamespace) }})
	}
	for _, ls := range set.ListenerSetsOf(pg) {
		owner := NamespacedName{Namespace: orDefault(ls.Namespace), Name: ls.Name}
		for _, l := range ls.Listeners() {
			l := &l
			byPort[l.Port] = append(byPort[l.Port], ownedListener{listener: l, kind: policy.KindListenerSet, owner: owner,
				allows: func(routeNamespace string) bool { return set.ListenerSetListenerAllows(ls, l, routeNamespace) }})
		}
	}
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		gp := compileGatewayPort(port, byPort[port], routes)
		gp.TLS = compilePortTLS(byPort[port], set)
		gp.L4 = m.compilePortL4(byPort[port], set)
		gw.Ports = append(gw.Ports, gp)
	}
	return gw
}

// compilePortTLS is the TLS of a port whose listeners are HTTPS: a chain
// per listener, its certificates and options; nil for a plaintext port.
// The policy checked every programmed listener's certificates.
func compilePortTLS(listeners []ownedListener, set *policy.Set) *PortTLS {
	var out *PortTLS
	for _, ol := range listeners {
		l := ol.listener
		if l.Protocol != gwapiv1.HTTPSProtocolType || l.TLS == nil {
			continue
		}
		if out == nil {
			out = &PortTLS{}
		}
		out.Chains = append(out.Chains, listenerTLSChain(ol, set))
	}
	return out
}

// listenerTLSChain is the TLS a listener terminates (HTTPS, or TLS in mode
// Terminate): its certificates and options.
func listenerTLSChain(ol ownedListener, set *policy.Set) *TLSChain {
	l := ol.listener
	chain := &TLSChain{
		Listener:   ol.owner.Namespace + "/" + ol.owner.Name + "/" + string(l.Name),
		Hostname:   listenerHostname(l),
		MinVersion: policy.DefaultTLSMinVersion,
	}
	if v := l.TLS.Options[policy.TLSOptionMinVersion]; v != "" {
		chain.MinVersion = string(v)
	}
	if v := l.TLS.Options[policy.TLSOptionCipherSuites]; v != "" {
		for c := range strings.SplitSeq(string(v), ",") {
			chain.CipherSuites = append(chain.CipherSuites, strings.TrimSpace(c))
		}
	}
	if a := set.ListenerACMEIssuer(ol.owner.Namespace, l); a != nil {
		chain.ACME = &ACMECertificate{Hostname: chain.Hostname, Issuer: ACMEIssuer{
			NamespacedName: NamespacedName{Namespace: cmp.Or(a.Namespace, policy.DefaultNamespace), Name: a.Name},
			Server:         a.Spec.Server, Email: a.Spec.Email, CAFile: a.CAFilePath(), Challenges: a.ChallengeTypes(),
			RenewalWindowRatio: cmp.Or(a.Spec.RenewalWindowRatio, policy.DefaultACMERenewalWindowRatio),
		}}
	}
	for _, c := range set.ListenerCertificates(ol.owner.Namespace, l) {
		sum := sha256.Sum256(slices.Concat(c.CertPEM, []byte{0}, c.KeyPEM))
		chain.Certificates = append(chain.Certificates, &Certificate{Secret: c.Secret, Digest: hex.EncodeToString(sum[:16]), CertPEM: c.CertPEM, KeyPEM: c.KeyPEM})
	}
	return chain
}

// ownedListener is a listener of a Gateway, its own or one of a
// ListenerSet attached to it: routes attach to it through a parentRef to
// its owner (of kind Gateway or ListenerSet).
type ownedListener struct {
	listener *gwapiv1.Listener
	kind     string
	owner    NamespacedName
	// allows reports whether its allowedRoutes admit a route's namespace.
	allows func(routeNamespace string) bool
}

// attachment is the rules of one route attached to one listener for one
// (intersected) hostname.
type attachment struct {
	listenerHostname string
	hostname         string
	rules            []*Rule
}

func compileGatewayPort(port int32, listeners []ownedListener, routes []*compiledRoute) *GatewayPort {
	gp := &GatewayPort{Number: port}
	var attachments []attachment
	listenerHostnames := make([]string, 0, len(listeners))
	hsts := map[string]string{} // by listener hostname: its HTTPS listener's option
	for _, l := range listeners {
		lh := listenerHostname(l.listener)
		listenerHostnames = append(listenerHostnames, lh)
		if t := l.listener.TLS; l.listener.Protocol == gwapiv1.HTTPSProtocolType && t != nil && t.Options[policy.TLSOptionHSTS] != "" {
			hsts[lh] = string(t.Options[policy.TLSOptionHSTS])
		}
		for _, cr := range routes {
			if l4Protocol([]ownedListener{l}) != "" || !attaches(l, cr) {
				continue
			}
			for _, h := range intersectHostnames(lh, cr.route.Spec.Hostnames) {
				attachments = append(attachments, attachment{listenerHostname: lh, hostname: h, rules: cr.rules})
			}
		}
	}
	hostnames := map[string]bool{}
	for _, a := range attachments {
		hostnames[a.hostname] = true
	}
	for _, h := range slices.Sorted(maps.Keys(hostnames)) {
		owner := mostSpecificCover(listenerHostnames, h)
		vh := &VirtualHost{Hostname: h, HSTS: hsts[owner]}
		var ranked []rankedRule
		for _, a := range attachments {
			// A request for h reaches the listener whose hostname matches it most
			// specifically, and there every route whose hostname covers h.
			if a.listenerHostname == owner && hostnameCovers(a.hostname, h) {
				for _, r := range a.rules {
					ranked = append(ranked, rankedRule{rule: r, hostname: a.hostname})
				}
			}
		}
		vh.Rules = sortByHostnameThenRule(ranked)
		gp.VirtualHosts = append(gp.VirtualHosts, vh)
	}
	return gp
}

// rankedRule is a rule with the (intersected) hostname through which its
// route attached to a virtual host.
type rankedRule struct {
	rule     *Rule
	hostname string
}

// sortByHostnameThenRule orders the rules of one virtual host. The Gateway
// API gives precedence to the rules of the route with the most specific
// matching hostname (most characters in a non-wildcard hostname, then in any
// hostname); ties fall to the HTTPRoute match precedence (compareRules).
// Rules of less specific routes still follow, so a request that matches no
// rule of the specific route falls through to them. A rule reached through
// several hostnames keeps its most specific one.
func sortByHostnameThenRule(ranked []rankedRule) []*Rule {
	slices.SortStableFunc(ranked, func(a, b rankedRule) int {
		return cmp.Or(
			cmp.Compare(nonWildcardChars(b.hostname), nonWildcardChars(a.hostname)),
			cmp.Compare(hostnameChars(b.hostname), hostnameChars(a.hostname)),
			compareRules(a.rule, b.rule),
		)
	})
	rules := make([]*Rule, 0, len(ranked))
	for _, r := range ranked {
		rules = append(rules, r.rule)
	}
	return dedupeRules(rules)
}

func nonWildcardChars(hostname string) int {
	if strings.HasPrefix(hostname, "*") {
		return 0
	}
	return len(hostname)
}

func hostnameChars(hostname string) int {
	if hostname == "*" {
		return 0
	}
	return len(strings.TrimPrefix(hostname, "*"))
}

// dedupeRules drops repeated rules (a route attached through two parentRefs
// to the same listener, or with two hostnames covering the same host).
func dedupeRules(rules []*Rule) []*Rule {
	seen := make(map[*Rule]bool, len(rules))
	out := rules[:0]
	for _, r := range rules {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

func listenerHostname(l *gwapiv1.Listener) string {
	if l.Hostname == nil || *l.Hostname == "" {
		return "*"
	}
	return strings.ToLower(string(*l.Hostname))
}

// attaches reports whether one of the route's parentRefs selects the
// listener ol (its owner, and the listener by sectionName and port), and
// the listener allows routes of the route's kind from the route's
// namespace.
func attaches(ol ownedListener, cr *compiledRoute) bool {
	if !ol.allows(cr.name.Namespace) || !policy.ListenerAllowsKind(ol.listener, cr.route.RouteKind()) {
		return false
	}
	l := ol.listener
	for _, ref := range cr.route.Spec.ParentRefs {
		if !isListenerOwnerRef(ref.Group, ref.Kind, ol.kind) {
			continue
		}
		if string(ref.Name) != ol.owner.Name || refNamespace(ref.Namespace, cr.name.Namespace) != ol.owner.Namespace {
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

// intersectHostnames and hostnameCovers are the Gateway API hostname rules,
// shared with policy validation (which decides a route's attachment and its
// status with them).
var (
	intersectHostnames = policy.IntersectHostnames
	hostnameCovers     = policy.HostnameCovers
)

// mostSpecificCover returns the listener hostname that a request for host
// reaches: exact first, then the longest wildcard, then "*".
func mostSpecificCover(listenerHostnames []string, host string) string {
	best := ""
	for _, lh := range listenerHostnames {
		if !hostnameCovers(lh, host) {
			continue
		}
		if best == "" || specificity(lh) > specificity(best) {
			best = lh
		}
	}
	return best
}

func specificity(hostname string) int {
	switch {
	case hostname == "*":
		return 0
	case strings.HasPrefix(hostname, "*"):
		return len(hostname)
	default:
		return 1 << 20
	}
}

// sortRules orders rules by Gateway API HTTPRoute precedence:
// Exact path > RegularExpression (longest first) > PathPrefix (longest
// first), as Envoy Gateway orders them (the specification leaves regular
// expressions to the implementation); then a method
// match; then more header matches; then more query parameter matches; then
// the oldest route (metadata.creationTimestamp), then by namespace/name; then rule and
// match order within the route.
func sortRules(rules []*Rule) {
	slices.SortStableFunc(rules, compareRules)
}

func compareRules(a, b *Rule) int {
	return cmp.Or(
		cmp.Compare(pathRank(a.Match.Path.Kind), pathRank(b.Match.Path.Kind)),
		prefixLength(b)-prefixLength(a),
		cmp.Compare(methodRank(a), methodRank(b)),
		cmp.Compare(len(b.Match.Headers), len(a.Match.Headers)),
		cmp.Compare(len(b.Match.QueryParams), len(a.Match.QueryParams)),
		compareRouteAge(a.routeCreated, a.Route, b.routeCreated, b.Route),
		cmp.Compare(a.RuleIndex, b.RuleIndex),
		cmp.Compare(a.MatchIndex, b.MatchIndex),
	)
}

func pathRank(k PathMatchKind) int {
	switch k {
	case PathExact:
		return 0
	case PathRegex:
		return 1
	default:
		return 2
	}
}

// prefixLength orders prefixes, and regular expressions, longest first.
func prefixLength(r *Rule) int {
	if r.Match.Path.Kind != PathExact {
		return len(r.Match.Path.Value)
	}
	return 0
}

func methodRank(r *Rule) int {
	if r.Match.Method != "" {
		return 0
	}
	return 1
}

// backendTLSPolicies sets the BackendTLS of every service port a
// BackendTLSPolicy targets.
func (c *compiler) backendTLSPolicies() error {
	for _, svc := range c.m.Services {
		for _, port := range svc.Ports {
			bt := c.set.BackendTLSFor(svc.Namespace, svc.Name, port.Name, port.Number)
			if bt == nil {
				continue
			}
			out := &BackendTLS{Policy: bt.Policy, Hostname: bt.Hostname, CAPEM: bt.CAPEM, SystemCA: bt.System}
			for _, san := range bt.SubjectAltNames {
				out.SubjectAltNames = append(out.SubjectAltNames, SubjectAltName{Type: san.Type, Value: san.Value})
			}
			port.BackendTLS = out
		}
	}
	return nil
}

// compileCORS compiles a CORS filter.
func compileCORS(f *gwapiv1.HTTPCORSFilter) *CORS {
	c := &CORS{MaxAge: f.MaxAge, AllowCredentials: f.AllowCredentials != nil && *f.AllowCredentials}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultCORSMaxAge
	}
	for _, o := range f.AllowOrigins {
		c.AllowOrigins = append(c.AllowOrigins, string(o))
	}
	for _, m := range f.AllowMethods {
		c.AllowMethods = append(c.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		c.AllowHeaders = append(c.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		c.ExposeHeaders = append(c.ExposeHeaders, string(h))
	}
	return c
}

// compileExtAuth compiles an ExternalAuth filter; its backend has no
// cluster when the reference does not resolve.
func (m *Model) compileExtAuth(routeNamespace string, f *gwapiv1.HTTPExternalAuthFilter, permitted func(routeNamespace, serviceNamespace, serviceName string) bool) *ExtAuth {
	ref := f.BackendRef
	ea := &ExtAuth{
		Protocol: string(f.ExternalAuthProtocol),
		Backend:  Backend{Service: NamespacedName{Namespace: refNamespace(ref.Namespace, routeNamespace), Name: string(ref.Name)}},
		Timeout:  DefaultExtAuthTimeout,
	}
	if ref.Port != nil {
		ea.Backend.Port = *ref.Port
	}
	if ref.Kind == nil || isServiceRef(ref.Group, ref.Kind) {
		ea.Backend.Cluster = m.backendCluster(routeNamespace, &ea.Backend, permitted)
	}
	if g := f.GRPCAuthConfig; g != nil {
		ea.AllowedHeaders = slices.Clone(g.AllowedRequestHeaders)
	}
	if h := f.HTTPAuthConfig; h != nil {
		ea.PathPrefix = h.Path
		ea.AllowedHeaders = slices.Clone(h.AllowedRequestHeaders)
		ea.AllowedUpstreamHeaders = slices.Clone(h.AllowedResponseHeaders)
	}
	if b := f.ForwardBody; b != nil {
		ea.MaxBodyBytes = uint32(b.MaxSize)
	}
	return ea
}
