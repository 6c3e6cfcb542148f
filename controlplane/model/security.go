package model

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/policy"
)

// Mesh is the mesh-wide identity and security configuration: the MeshConfig,
// or its defaults.
type Mesh struct {
	TrustDomain    string        `json:"trustDomain"`
	MTLSMode       string        `json:"mtlsMode"`
	DefaultAction  string        `json:"defaultAction"`
	CertificateTTL time.Duration `json:"certificateTTL"`
	// OutboundScope is OutboundScopeAll or OutboundScopeAuthorized.
	OutboundScope string `json:"outboundScope"`
	// Tracing is where the proxies send spans; nil: no tracing.
	Tracing *Tracing `json:"tracing,omitempty"`
	// AccessLog is the proxies' access log; nil: none.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// RateLimitService is where the proxies ask about global rate limits;
	// nil: none.
	RateLimitService *RateLimitService `json:"rateLimitService,omitempty"`
}

// RateLimitService is the mesh's global rate-limit service (MeshConfig
// spec.rateLimitService), with its defaults applied.
type RateLimitService struct {
	Address string        `json:"address"`
	Timeout time.Duration `json:"timeout"`
}

// AccessLog is the mesh's access log (MeshConfig spec.accessLog, enabled),
// with its defaults applied.
type AccessLog struct {
	// Path is where each proxy writes its lines: /dev/stdout, /dev/stderr
	// or a file.
	Path string `json:"path"`
	// Fields are the user's fields (name → format string); nil: the
	// default fields.
	Fields map[string]string `json:"fields,omitempty"`
}

// Tracing is the mesh's OpenTelemetry tracing (MeshConfig spec.tracing),
// with its defaults applied.
type Tracing struct {
	// Endpoint is the collector's OTLP receiver, ip:port.
	Endpoint string `json:"endpoint"`
	// Protocol is policy.TracingProtocolGRPC or policy.TracingProtocolHTTP.
	Protocol string `json:"protocol"`
	// SamplingPercent is the percentage of new traces sampled.
	SamplingPercent float64 `json:"samplingPercent"`
	// Attributes are added to every span.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// DefaultMesh is the configuration of a mesh without a MeshConfig.
func DefaultMesh() Mesh {
	return Mesh{
		TrustDomain:    policy.DefaultTrustDomain,
		MTLSMode:       policy.DefaultMTLSMode,
		DefaultAction:  policy.DefaultAction,
		CertificateTTL: policy.DefaultCertificateTTL,
		OutboundScope:  policy.DefaultOutboundScope,
	}
}

// SPIFFEID returns the identity of namespace/name (a service or gateway) in
// this mesh: spiffe://<trustDomain>/ns/<namespace>/svc/<name>.
func (m Mesh) SPIFFEID(namespace, name string) string {
	return spiffeid.Of(m.TrustDomain, namespace, name)
}

// StringMatchKind is how a StringMatch compares.
type StringMatchKind string

// String match kinds.
const (
	MatchExact  StringMatchKind = "Exact"
	MatchPrefix StringMatchKind = "Prefix"
	// MatchRegex: Value is an RE2 expression that must match the whole string.
	MatchRegex StringMatchKind = "Regex"
)

// StringMatch matches a string (an identity or a path).
type StringMatch struct {
	Kind  StringMatchKind `json:"kind"`
	Value string          `json:"value"`
}

// Authorization is what every SecurityPolicy that applies at one enforcement
// point compiles to: DENY rules (a match denies), then ALLOW rules (when
// EnforceAllow, a request must match one).
type Authorization struct {
	// Policies applying here, "namespace/name", sorted.
	Policies []string `json:"policies"`
	// Deny and Allow rules in policy, then rule order.
	Deny  []*AuthzRule `json:"deny,omitempty"`
	Allow []*AuthzRule `json:"allow,omitempty"`
	// EnforceAllow: some applying policy has an ALLOW rule, or the mesh's
	// default action is DENY. With no Allow rules it denies everything.
	EnforceAllow bool `json:"enforceAllow"`
}

// AuthzRule is one compiled SecurityPolicy rule. It matches when some From
// entry and some To entry match; an empty From or To matches everything.
type AuthzRule struct {
	// Name is "<namespace>/<policy>/<rule name or index>".
	Name string `json:"name"`
	// Policy is "<namespace>/<policy>".
	Policy string       `json:"policy"`
	From   []*AuthzFrom `json:"from,omitempty"`
	To     []*AuthzTo   `json:"to,omitempty"`
}

// AuthzFrom matches the caller: every non-empty field must match, a field
// matches when any of its values does.
type AuthzFrom struct {
	// Services, Identities and Namespaces match the peer's SPIFFE ID.
	Services   []StringMatch `json:"services,omitempty"`
	Identities []StringMatch `json:"identities,omitempty"`
	Namespaces []StringMatch `json:"namespaces,omitempty"`
	// IPBlocks match the TCP peer address: canonical CIDRs.
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// Claims match the request's verified JWT (principals are its sub):
	// every one must match.
	Claims []ClaimMatch `json:"claims,omitempty"`
}

// AuthzTo matches the request: every non-empty field must match, a field
// matches when any of its values does.
type AuthzTo struct {
	Methods []string      `json:"methods,omitempty"`
	Paths   []StringMatch `json:"paths,omitempty"`
	// Headers match exactly; names are lowercase.
	Headers []Header `json:"headers,omitempty"`
}

// PolicyNames returns the distinct policies of rules, sorted.
func PolicyNames(rules []*AuthzRule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.Policy)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Merge returns the authorization of a point where both a and b apply (a
// gateway's policies and a route's): every policy's rules, enforcing ALLOW if
// either does. Either may be nil; the result is nil when both are.
func Merge(a, b *Authorization) *Authorization {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	out := &Authorization{
		Policies:     slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a.Policies), b.Policies...)))),
		Deny:         dedupeAuthz(append(slices.Clone(a.Deny), b.Deny...)),
		Allow:        dedupeAuthz(append(slices.Clone(a.Allow), b.Allow...)),
		EnforceAllow: a.EnforceAllow || b.EnforceAllow,
	}
	return out
}

func dedupeAuthz(rules []*AuthzRule) []*AuthzRule {
	seen := make(map[string]bool, len(rules))
	out := rules[:0]
	for _, r := range rules {
		if !seen[r.Name] {
			seen[r.Name] = true
			out = append(out, r)
		}
	}
	return out
}

// compileMesh reads the MeshConfig, or returns the defaults.
func compileMesh(mc *policy.MeshConfig) (Mesh, error) {
	mesh := DefaultMesh()
	if mc == nil {
		return mesh, nil
	}
	spec := mc.Spec
	if spec.TrustDomain != "" {
		mesh.TrustDomain = spec.TrustDomain
	}
	if spec.MTLS != nil && spec.MTLS.Mode != "" {
		mesh.MTLSMode = spec.MTLS.Mode
	}
	if spec.DefaultAction != "" {
		mesh.DefaultAction = spec.DefaultAction
	}
	if spec.OutboundScope != "" {
		mesh.OutboundScope = spec.OutboundScope
	}
	if t := spec.Tracing; t != nil {
		mesh.Tracing = &Tracing{
			Endpoint:        t.Endpoint,
			Protocol:        cmp.Or(t.Protocol, policy.TracingProtocolGRPC),
			SamplingPercent: policy.DefaultTracingSampling,
			Attributes:      maps.Clone(t.ResourceAttributes),
		}
		if t.Sampling != nil {
			mesh.Tracing.SamplingPercent = *t.Sampling
		}
	}
	if rs := spec.RateLimitService; rs != nil {
		timeout, err := policy.ParseDuration(cmp.Or(rs.Timeout, policy.DefaultRateLimitTimeout))
		if err != nil {
			return mesh, fmt.Errorf("meshconfig %s/%s: rateLimitService.timeout: %w", mc.Namespace, mc.Name, err)
		}
		mesh.RateLimitService = &RateLimitService{Address: rs.Address, Timeout: timeout}
	}
	if a := spec.AccessLog; a != nil && (a.Enabled == nil || *a.Enabled) {
		mesh.AccessLog = &AccessLog{Path: cmp.Or(a.Path, policy.DefaultAccessLogPath), Fields: maps.Clone(a.Fields)}
	}
	if spec.CertificateTTL != "" {
		ttl, err := policy.ParseDuration(spec.CertificateTTL)
		if err != nil {
			return mesh, fmt.Errorf("meshconfig %s/%s: certificateTTL: %w", mc.Namespace, mc.Name, err)
		}
		mesh.CertificateTTL = ttl
	}
	return mesh, nil
}

// compiledPolicy is one SecurityPolicy's rules, compiled once.
type compiledPolicy struct {
	name  string
	deny  []*AuthzRule
	allow []*AuthzRule
	// namespace and extAuth: the policy's extAuth section (compiled where
	// it applies, once the services are: compileSecurityExtAuth).
	namespace string
	extAuth   *policy.ExtAuth
	authn     *compiledAuthn // nil: the policy does not authenticate
}

func (m *Model) compilePolicy(sp *policy.SecurityPolicy, fileConsumers []policy.APIKeyConsumer) (*compiledPolicy, error) {
	ns := orDefault(sp.Namespace)
	cp := &compiledPolicy{name: ns + "/" + sp.Name, namespace: ns, extAuth: sp.Spec.ExtAuth}
	if sp.Spec.JWT != nil {
		authn, err := compileJWT(cp.name, sp.Spec.JWT)
		if err != nil {
			return nil, fmt.Errorf("securitypolicy %s: %w", cp.name, err)
		}
		cp.authn = authn
	}
	if sp.Spec.APIKey != nil {
		cp.authn = compileAPIKey(sp.Spec.APIKey, fileConsumers)
	}
	if sp.Spec.BasicAuth != nil {
		cp.authn = &compiledAuthn{basic: &BasicAuthn{Htpasswd: sp.Spec.BasicAuth.Htpasswd, ForwardHeader: sp.Spec.BasicAuth.ForwardUsernameHeader}}
	}
	for i, rule := range sp.Spec.Rules {
		label := rule.Name
		if label == "" {
			label = strconv.Itoa(i)
		}
		ar := &AuthzRule{Name: cp.name + "/" + label, Policy: cp.name}
		for j, from := range rule.From {
			f, err := m.compileFrom(ns, from)
			if err != nil {
				return nil, fmt.Errorf("securitypolicy %s: spec.rules[%d].from[%d]: %w", cp.name, i, j, err)
			}
			ar.From = append(ar.From, f)
		}
		for j, to := range rule.To {
			t, err := compileTo(to)
			if err != nil {
				return nil, fmt.Errorf("securitypolicy %s: spec.rules[%d].to[%d]: %w", cp.name, i, j, err)
			}
			ar.To = append(ar.To, t)
		}
		switch rule.Action {
		case policy.ActionDeny:
			cp.deny = append(cp.deny, ar)
		case policy.ActionAllow:
			cp.allow = append(cp.allow, ar)
		default:
			return nil, fmt.Errorf("securitypolicy %s: spec.rules[%d].action %q: want ALLOW or DENY", cp.name, i, rule.Action)
		}
	}
	return cp, nil
}

func (m *Model) compileFrom(policyNamespace string, in policy.RuleSource) (*AuthzFrom, error) {
	out := &AuthzFrom{}
	td := m.Mesh.TrustDomain
	for _, s := range in.Services {
		if s == "*" {
			out.Services = append(out.Services, StringMatch{Kind: MatchPrefix, Value: spiffeid.TrustDomainPrefix(td)})
			continue
		}
		ns, name, qualified := strings.Cut(s, "/")
		if !qualified {
			ns, name = policyNamespace, s
		}
		if ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("services: invalid service %q", s)
		}
		out.Services = append(out.Services, StringMatch{Kind: MatchExact, Value: spiffeid.Of(td, ns, name)})
	}
	for _, id := range in.Identities {
		if !strings.HasPrefix(id, spiffeid.Scheme+"://") {
			return nil, fmt.Errorf("identities: %q is not a SPIFFE ID", id)
		}
		sm := globMatch(id)
		if sm.Kind == MatchRegex {
			if _, ok := m.regexps[sm.Value]; !ok {
				re, err := compileWhole(sm.Value)
				if err != nil {
					return nil, fmt.Errorf("identities: %q: %w", id, err)
				}
				m.regexps[sm.Value] = re
			}
		}
		out.Identities = append(out.Identities, sm)
	}
	for _, ns := range in.Namespaces {
		if ns == "" || strings.Contains(ns, "/") {
			return nil, fmt.Errorf("namespaces: invalid namespace %q", ns)
		}
		out.Namespaces = append(out.Namespaces, StringMatch{Kind: MatchPrefix, Value: spiffeid.NamespacePrefix(td, ns)})
	}
	for _, block := range in.IPBlocks {
		prefix, msg := policy.ParseIPBlock(block)
		if msg != "" {
			return nil, fmt.Errorf("ipBlocks: %s", msg)
		}
		out.IPBlocks = append(out.IPBlocks, prefix.String())
	}
	out.Claims = compileClaims(in.Claims, in.Principals)
	return out, nil
}

func compileTo(in policy.RuleOperation) (*AuthzTo, error) {
	out := &AuthzTo{Methods: slices.Clone(in.Methods)}
	for _, p := range in.Paths {
		if msg := policy.CheckPathPattern(p); msg != "" {
			return nil, fmt.Errorf("paths: %s", msg)
		}
		out.Paths = append(out.Paths, PathPattern(p))
	}
	for _, h := range in.Headers {
		out.Headers = append(out.Headers, Header{Name: strings.ToLower(h.Name), Value: h.Value})
	}
	return out, nil
}

// PathPattern compiles a SecurityPolicy path: "/a/*" is the prefix "/a/"
// ("/*" any path), a path without "*" is exact, and otherwise "*" matches
// within one segment and "**" across segments (a regular expression).
func PathPattern(p string) StringMatch {
	if rest, ok := strings.CutSuffix(p, "/*"); ok && !strings.Contains(rest, "*") {
		return StringMatch{Kind: MatchPrefix, Value: rest + "/"}
	}
	return globMatch(p)
}

// globMatch is an exact match for a string without "*", else a regular
// expression where "**" matches anything and "*" anything but "/".
func globMatch(pattern string) StringMatch {
	if !strings.Contains(pattern, "*") {
		return StringMatch{Kind: MatchExact, Value: pattern}
	}
	var b strings.Builder
	for i, part := range strings.Split(pattern, "**") {
		if i > 0 {
			b.WriteString(".*")
		}
		for j, lit := range strings.Split(part, "*") {
			if j > 0 {
				b.WriteString("[^/]*")
			}
			b.WriteString(regexp.QuoteMeta(lit))
		}
	}
	return StringMatch{Kind: MatchRegex, Value: b.String()}
}

// policyTargets are the enforcement points of every policy.
type policyTargets struct {
	services map[NamespacedName][]*compiledPolicy
	gateways map[NamespacedName][]*compiledPolicy
	routes   map[NamespacedName][]*compiledPolicy
	mtls     map[NamespacedName]string
}

// compilePolicies compiles every SecurityPolicy and groups them by target;
// fileConsumers gives a policy's API consumers file's consumers
// (policy.Set.APIKeyFileConsumers). A policy that does not compile fails
// closed: in its place, a rule that denies every request to its targets;
// leaveOut is told.
func (m *Model) compilePolicies(policies []*policy.SecurityPolicy, fileConsumers func(*policy.SecurityPolicy) []policy.APIKeyConsumer, leaveOut func(kind string, name NamespacedName, src policy.Source, err error)) *policyTargets {
	pt := &policyTargets{
		services: map[NamespacedName][]*compiledPolicy{},
		gateways: map[NamespacedName][]*compiledPolicy{},
		routes:   map[NamespacedName][]*compiledPolicy{},
		mtls:     map[NamespacedName]string{},
	}
	sorted := slices.Clone(policies)
	slices.SortStableFunc(sorted, func(a, b *policy.SecurityPolicy) int {
		return cmp.Or(cmp.Compare(orDefault(a.Namespace), orDefault(b.Namespace)), cmp.Compare(a.Name, b.Name))
	})
	for _, sp := range sorted {
		ns := orDefault(sp.Namespace)
		cp, err := m.compilePolicy(sp, fileConsumers(sp))
		if err != nil {
			leaveOut(policy.KindSecurityPolicy, NamespacedName{Namespace: ns, Name: sp.Name}, sp.Source, err)
			cp = denyAll(ns + "/" + sp.Name)
		}
		for i, ref := range sp.Spec.TargetRefs {
			target := NamespacedName{Namespace: ns, Name: ref.Name}
			switch ref.Kind {
			case policy.KindService:
				pt.services[target] = appendPolicy(pt.services[target], cp)
				if sp.Spec.MTLS != nil && sp.Spec.MTLS.Mode != "" {
					pt.mtls[target] = sp.Spec.MTLS.Mode
				}
			case policy.KindGateway:
				pt.gateways[target] = appendPolicy(pt.gateways[target], cp)
			case policy.KindHTTPRoute:
				pt.routes[target] = appendPolicy(pt.routes[target], cp)
			default:
				leaveOut(policy.KindSecurityPolicy, NamespacedName{Namespace: ns, Name: sp.Name}, sp.Source,
					fmt.Errorf("securitypolicy %s: spec.targetRefs[%d]: kind %q: not supported", cp.name, i, ref.Kind))
			}
		}
	}
	return pt
}

// denyAll is a compiled policy, named name, that denies every request.
func denyAll(name string) *compiledPolicy {
	return &compiledPolicy{name: name, deny: []*AuthzRule{{Name: name + "/fail-closed", Policy: name}}}
}

func appendPolicy(list []*compiledPolicy, cp *compiledPolicy) []*compiledPolicy {
	if slices.Contains(list, cp) {
		return list
	}
	return append(list, cp)
}

// authorization is what the policies applying at one enforcement point
// compile to; nil when nothing is enforced there (no policy with rules, and
// the default action is ALLOW).
func (m *Model) authorization(policies []*compiledPolicy) *Authorization {
	defaultDeny := m.Mesh.DefaultAction == policy.ActionDeny
	// A policy without rules (only mtls or extAuth) authorizes nothing.
	policies = slices.DeleteFunc(slices.Clone(policies), func(cp *compiledPolicy) bool {
		return len(cp.deny)+len(cp.allow) == 0
	})
	if len(policies) == 0 && !defaultDeny {
		return nil
	}
	a := &Authorization{Policies: []string{}, EnforceAllow: defaultDeny}
	for _, cp := range policies {
		a.Policies = append(a.Policies, cp.name)
		a.Deny = append(a.Deny, cp.deny...)
		a.Allow = append(a.Allow, cp.allow...)
		if len(cp.allow) > 0 {
			a.EnforceAllow = true
		}
	}
	return a
}

// compileSecurityExtAuth is the external authorization of the policies
// applying at one point: the first one's (in namespace and name order)
// that has an extAuth section; nil when none has. Its service resolves
// as a backend of a route in the policy's namespace; an unresolved one
// has no cluster (every check then fails).
func (c *compiler) compileSecurityExtAuth(policies []*compiledPolicy) *ExtAuth {
	for _, cp := range policies {
		pe := cp.extAuth
		if pe == nil || pe.HTTP == nil && pe.GRPC == nil {
			continue
		}
		ea := &ExtAuth{
			Protocol:       ExtAuthHTTP,
			AllowedHeaders: slices.Clone(pe.HeadersToExtAuth),
			Timeout:        DefaultExtAuthTimeout,
			FailOpen:       pe.FailureMode == policy.ExtAuthFailOpen,
		}
		var ref gwapiv1.BackendObjectReference
		if pe.GRPC != nil {
			ea.Protocol, ref = ExtAuthGRPC, pe.GRPC.BackendRef
		} else {
			ref = pe.HTTP.BackendRef
			ea.PathPrefix, ea.AllowedUpstreamHeaders = pe.HTTP.Path, slices.Clone(pe.HTTP.HeadersToBackend)
		}
		ea.Backend = Backend{Service: NamespacedName{Namespace: refNamespace(ref.Namespace, cp.namespace), Name: string(ref.Name)}}
		if ref.Port != nil {
			ea.Backend.Port = *ref.Port
		}
		if ref.Kind == nil || isServiceRef(ref.Group, ref.Kind) {
			ea.Backend.Cluster = c.m.backendCluster(cp.namespace, &ea.Backend, func(routeNamespace, serviceNamespace, serviceName string) bool {
				return c.set.RouteBackendPermitted(policy.KindHTTPRoute, routeNamespace, serviceNamespace, serviceName)
			})
		}
		if pe.Timeout != "" {
			if d, err := policy.ParseDuration(pe.Timeout); err == nil {
				ea.Timeout = d
			}
		}
		if b := pe.BodyToExtAuth; b != nil {
			ea.MaxBodyBytes = b.MaxRequestBytes
		}
		return ea
	}
	return nil
}
