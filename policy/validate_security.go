package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/logformat"
)

// maxIdentityLength bounds a SPIFFE ID pattern (the SPIFFE specification
// limits IDs to 2048 bytes).
const maxIdentityLength = 2048

// httpMethods are the methods a SecurityPolicy may name.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// validateMeshConfigs keeps the first MeshConfig of the set, checks it,
// and reports the others.
func (l *loader) validateMeshConfigs(*setIndex) {
	for i, mc := range l.meshConfigs {
		if i == 0 {
			l.set.MeshConfig = mc
			if !l.malformed[resourceKey{KindMeshConfig, mc.Namespace, mc.Name}] {
				l.checkMeshConfig(mc)
			}
			continue
		}
		first := l.meshConfigs[0]
		l.errorf(mc.Source, "metadata.name", "only one MeshConfig is allowed: %q is already defined at %s:%d",
			first.Namespace+"/"+first.Name, first.Source.File, first.Source.LineOf("metadata.name"))
	}
}

// validateSecurityPolicies checks every well-formed SecurityPolicy against
// the resources it targets.
func (l *loader) validateSecurityPolicies(ix *setIndex) {
	// mtlsOwner records which policy set the mTLS mode of a service.
	mtlsOwner := make(map[nsName]*SecurityPolicy)
	for _, sp := range l.set.SecurityPolicies {
		if l.malformed[resourceKey{KindSecurityPolicy, sp.Namespace, sp.Name}] {
			continue
		}
		l.checkSecurityPolicy(sp, ix.gateways, ix.services, ix.routes, mtlsOwner)
	}
}

func (l *loader) checkMeshConfig(mc *MeshConfig) {
	src, spec := mc.Source, &mc.Spec
	if spec.TrustDomain != "" {
		if msg := checkSubdomain(spec.TrustDomain); msg != "" {
			l.errorf(src, "spec.trustDomain", "invalid trust domain %q: %s", spec.TrustDomain, msg)
		}
	}
	if spec.MTLS != nil && spec.MTLS.Mode != "" {
		l.checkMTLSMode(src, "spec.mtls.mode", spec.MTLS.Mode)
	}
	switch spec.DefaultAction {
	case "", ActionAllow, ActionDeny:
	default:
		l.errorf(src, "spec.defaultAction", "unknown action %q (want ALLOW or DENY)", spec.DefaultAction)
	}
	switch spec.OutboundScope {
	case "", OutboundScopeAll, OutboundScopeAuthorized:
	default:
		l.errorf(src, "spec.outboundScope", "unknown outbound scope %q (want All or Authorized)", spec.OutboundScope)
	}
	if spec.Tracing != nil {
		l.checkTracing(src, spec.Tracing)
	}
	if spec.AccessLog != nil {
		l.checkAccessLog(src, spec.AccessLog)
	}
	if spec.RateLimitService != nil {
		l.checkRateLimitService(src, spec.RateLimitService)
	}
	if spec.CertificateTTL != "" {
		ttl, err := ParseDuration(spec.CertificateTTL)
		switch {
		case err != nil:
			l.errorf(src, "spec.certificateTTL", "%v", err)
		case ttl < MinCertificateTTL:
			l.errorf(src, "spec.certificateTTL", "certificateTTL %s is shorter than the minimum 1m", spec.CertificateTTL)
		}
	}
}

func (l *loader) checkMTLSMode(src Source, path, mode string) bool {
	switch mode {
	case MTLSStrict, MTLSPermissive:
		return true
	case "":
		l.errorf(src, path, "mode is required (STRICT or PERMISSIVE)")
	default:
		l.errorf(src, path, "unknown mTLS mode %q (want STRICT or PERMISSIVE)", mode)
	}
	return false
}

func (l *loader) checkSecurityPolicy(sp *SecurityPolicy, gateways map[nsName]*Gateway, services map[nsName]*Service,
	routes map[nsName]bool, mtlsOwner map[nsName]*SecurityPolicy) {
	src, spec := sp.Source, &sp.Spec
	if len(spec.TargetRefs) == 0 {
		l.errorf(src, "spec.targetRefs", "at least one targetRef is required (a Service, Gateway or HTTPRoute)")
	}
	if len(spec.Rules) == 0 && spec.MTLS == nil && spec.JWT == nil && spec.APIKey == nil && spec.BasicAuth == nil && spec.ExtAuth == nil {
		l.errorf(src, "spec", "a SecurityPolicy needs rules, mtls, jwt, apiKey, basicAuth, extAuth or some of them")
	}
	if spec.ExtAuth != nil {
		l.checkSecurityExtAuth(sp, "spec.extAuth", spec.ExtAuth, services)
	}
	if n := btoi(spec.JWT != nil) + btoi(spec.APIKey != nil) + btoi(spec.BasicAuth != nil); n > 1 {
		l.errorf(src, "spec", "jwt, apiKey and basicAuth are exclusive: one way to authenticate per policy")
	}
	if spec.JWT != nil {
		l.checkJWT(src, spec.JWT)
	}
	if spec.APIKey != nil {
		l.checkAPIKey(sp, spec.APIKey)
	}
	if spec.BasicAuth != nil {
		l.checkBasicAuth(src, spec.BasicAuth)
	}
	var serviceTargets []nsName
	nonService := -1
	seen := make(map[string]int)
	for i, ref := range spec.TargetRefs {
		p := fmt.Sprintf("spec.targetRefs[%d]", i)
		kind, ok := l.checkTargetRef(src, p, ref)
		if !ok {
			continue
		}
		if kind != KindService && nonService < 0 {
			nonService = i
		}
		key := kind + "/" + ref.Name
		if j, dup := seen[key]; dup {
			l.errorf(src, p, "duplicate target %s %q (also spec.targetRefs[%d])", kind, ref.Name, j)
			continue
		}
		seen[key] = i
		target := nsName{sp.Namespace, ref.Name}
		switch kind {
		case KindService:
			if services[target] == nil {
				l.refErrorf(src, p+".name", ReasonTargetNotFound, "service %q not found in namespace %q%s", ref.Name, sp.Namespace, l.rejectedNote(KindService, sp.Namespace, ref.Name))
				continue
			}
			serviceTargets = append(serviceTargets, target)
		case KindGateway:
			if gateways[target] == nil {
				l.refErrorf(src, p+".name", ReasonTargetNotFound, "gateway %q not found in namespace %q%s", ref.Name, sp.Namespace, l.rejectedNote(KindGateway, sp.Namespace, ref.Name))
			}
		case KindHTTPRoute:
			if !routes[target] {
				l.refErrorf(src, p+".name", ReasonTargetNotFound, "httproute %q not found in namespace %q%s", ref.Name, sp.Namespace, l.rejectedNote(KindHTTPRoute, sp.Namespace, ref.Name))
			}
		}
	}
	if spec.MTLS != nil {
		switch {
		case nonService >= 0:
			l.errorf(src, "spec.mtls", "mtls applies to Service targets only (spec.targetRefs[%d] is a %s)",
				nonService, spec.TargetRefs[nonService].Kind)
		case l.checkMTLSMode(src, "spec.mtls.mode", spec.MTLS.Mode):
			for _, target := range serviceTargets {
				if other, taken := mtlsOwner[target]; taken && other.Spec.MTLS.Mode != spec.MTLS.Mode {
					l.errorf(src, "spec.mtls.mode", "service %q gets mtls.mode %s here but %s from SecurityPolicy %q (%s:%d)",
						target.name, spec.MTLS.Mode, other.Spec.MTLS.Mode, other.Name, other.Source.File, other.Source.LineOf("spec.mtls.mode"))
				} else if !taken {
					mtlsOwner[target] = sp
				}
			}
		}
	}
	names := make(map[string]int)
	for i := range spec.Rules {
		l.checkSecurityRule(src, fmt.Sprintf("spec.rules[%d]", i), i, &spec.Rules[i], names)
	}
	l.checkL4Rules(sp, services)
}

// checkTargetRef validates the group and kind of a target reference and
// returns the kind when it is one a policy can target.
func (l *loader) checkTargetRef(src Source, p string, ref PolicyTargetRef) (string, bool) {
	ok := true
	if ref.Name == "" {
		l.errorf(src, p+".name", "name is required")
		ok = false
	} else if msg := checkDNSLabel(ref.Name); msg != "" {
		l.errorf(src, p+".name", "invalid name %q: %s", ref.Name, msg)
		ok = false
	}
	group := "<unset>"
	if ref.Group != nil {
		group = *ref.Group
	}
	switch ref.Kind {
	case KindService:
		if ref.Group != nil && *ref.Group != "" && *ref.Group != MeshgateGroup {
			l.errorf(src, p+".group", "kind Service needs group \"\" or %s, not %q", MeshgateGroup, group)
			return "", false
		}
	case KindGateway, KindHTTPRoute:
		if ref.Group != nil && *ref.Group != GatewayGroup {
			l.errorf(src, p+".group", "kind %s needs group %s, not %q", ref.Kind, GatewayGroup, group)
			return "", false
		}
	case "":
		l.errorf(src, p+".kind", "kind is required (Service, Gateway or HTTPRoute)")
		return "", false
	default:
		l.errorf(src, p+".kind", "target kind %q is not supported (want Service, Gateway or HTTPRoute)", ref.Kind)
		return "", false
	}
	return ref.Kind, ok
}

func (l *loader) checkSecurityRule(src Source, p string, index int, rule *SecurityRule, names map[string]int) {
	if rule.Name != "" {
		if msg := checkDNSLabel(rule.Name); msg != "" {
			l.errorf(src, p+".name", "invalid rule name %q: %s", rule.Name, msg)
		} else if j, dup := names[rule.Name]; dup {
			l.errorf(src, p+".name", "duplicate rule name %q (also spec.rules[%d])", rule.Name, j)
		} else {
			names[rule.Name] = index
		}
	}
	switch rule.Action {
	case ActionAllow, ActionDeny:
	case "":
		l.errorf(src, p+".action", "action is required (ALLOW or DENY)")
	default:
		l.errorf(src, p+".action", "unknown action %q (want ALLOW or DENY)", rule.Action)
	}
	for i, from := range rule.From {
		l.checkRuleSource(src, fmt.Sprintf("%s.from[%d]", p, i), from)
	}
	for i, to := range rule.To {
		l.checkRuleOperation(src, fmt.Sprintf("%s.to[%d]", p, i), to)
	}
}

func (l *loader) checkRuleSource(src Source, p string, from RuleSource) {
	if len(from.Services)+len(from.Identities)+len(from.Namespaces)+len(from.IPBlocks)+len(from.Principals)+len(from.Claims) == 0 {
		l.errorf(src, p, "an entry needs at least one of services, identities, namespaces, ipBlocks, principals, claims")
		return
	}
	for i, pr := range from.Principals {
		if pr == "" || len(pr) > maxClaimLength {
			l.errorf(src, fmt.Sprintf("%s.principals[%d]", p, i), "want 1 to %d characters", maxClaimLength)
		}
	}
	for i, c := range from.Claims {
		cp := fmt.Sprintf("%s.claims[%d]", p, i)
		if msg := checkClaimName(c.Name); msg != "" {
			l.errorf(src, cp+".name", "%s", msg)
		}
		if len(c.Values) == 0 {
			l.errorf(src, cp+".values", "at least one value is required")
		}
		for j, v := range c.Values {
			if v == "" || len(v) > maxClaimLength {
				l.errorf(src, fmt.Sprintf("%s.values[%d]", cp, j), "want 1 to %d characters", maxClaimLength)
			}
		}
	}
	for i, s := range from.Services {
		if msg := checkServiceRef(s); msg != "" {
			l.errorf(src, fmt.Sprintf("%s.services[%d]", p, i), "%s", msg)
		}
	}
	for i, id := range from.Identities {
		if msg := checkIdentityPattern(id); msg != "" {
			l.errorf(src, fmt.Sprintf("%s.identities[%d]", p, i), "%s", msg)
		}
	}
	for i, ns := range from.Namespaces {
		if msg := checkDNSLabel(ns); msg != "" {
			l.errorf(src, fmt.Sprintf("%s.namespaces[%d]", p, i), "invalid namespace %q: %s", ns, msg)
		}
	}
	for i, block := range from.IPBlocks {
		if _, msg := ParseIPBlock(block); msg != "" {
			l.errorf(src, fmt.Sprintf("%s.ipBlocks[%d]", p, i), "%s", msg)
		}
	}
}

func (l *loader) checkRuleOperation(src Source, p string, to RuleOperation) {
	if len(to.Methods)+len(to.Paths)+len(to.Headers) == 0 {
		l.errorf(src, p, "an entry needs at least one of methods, paths, headers")
		return
	}
	for i, m := range to.Methods {
		if !slices.Contains(httpMethods, m) {
			l.errorf(src, fmt.Sprintf("%s.methods[%d]", p, i), "unknown method %q (want %s)", m, strings.Join(httpMethods, ", "))
		}
	}
	for i, path := range to.Paths {
		if msg := CheckPathPattern(path); msg != "" {
			l.errorf(src, fmt.Sprintf("%s.paths[%d]", p, i), "%s", msg)
		}
	}
	for i, h := range to.Headers {
		hp := fmt.Sprintf("%s.headers[%d]", p, i)
		if msg := checkHeaderName(h.Name); msg != "" {
			l.errorf(src, hp+".name", "%s", msg)
		}
		if h.Value == "" {
			l.errorf(src, hp+".value", "value is required")
		}
	}
}

// checkServiceRef returns why s is not "name", "namespace/name" or "*", or "".
func checkServiceRef(s string) string {
	if s == "*" {
		return ""
	}
	ns, name, qualified := strings.Cut(s, "/")
	if !qualified {
		name, ns = ns, ""
	}
	if !dnslabel.Valid(name) || (qualified && !dnslabel.Valid(ns)) {
		return fmt.Sprintf("invalid service %q: want \"name\", \"namespace/name\" (RFC 1123 labels) or \"*\"", s)
	}
	return ""
}

// checkIdentityPattern returns why id is not a SPIFFE ID pattern, or "".
func checkIdentityPattern(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	switch {
	case !ok:
		return fmt.Sprintf("invalid identity %q: must start with \"spiffe://\"", id)
	case len(id) > maxIdentityLength:
		return fmt.Sprintf("invalid identity: longer than %d bytes", maxIdentityLength)
	case rest == "":
		return fmt.Sprintf("invalid identity %q: no trust domain", id)
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c <= ' ' || c >= 0x7f || c == '?' || c == '#' {
			return fmt.Sprintf("invalid identity %q: character %q is not allowed in a SPIFFE ID", id, c)
		}
	}
	if msg := checkGlobSegments(rest); msg != "" {
		return fmt.Sprintf("invalid identity %q: %s", id, msg)
	}
	return ""
}

// checkGlobSegments checks the "/"-separated segments of a pattern: none
// empty except a trailing one, and "**" only as a whole segment.
func checkGlobSegments(pattern string) string {
	segments := strings.Split(pattern, "/")
	for i, seg := range segments {
		switch {
		case seg == "" && i < len(segments)-1:
			return "empty path segment (\"//\")"
		case strings.Contains(seg, "**") && seg != "**":
			return "\"**\" must be a whole segment"
		}
	}
	return ""
}

// CheckPathPattern returns why p is not a SecurityPolicy path pattern, or "":
// an absolute path, where a trailing "/*" makes a prefix, "*" matches within
// one segment and "**" (a whole segment) across segments.
func CheckPathPattern(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("path %q must start with \"/\"", p)
	case strings.ContainsAny(p, "?#"):
		return fmt.Sprintf("path %q must not contain '?' or '#'", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return fmt.Sprintf("path %q: character %q is not allowed", p, c)
		}
	}
	if msg := checkGlobSegments(p[1:]); msg != "" {
		return fmt.Sprintf("invalid path pattern %q: %s", p, msg)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Sprintf("path %q must not contain \"/./\" or \"/../\"", p)
		}
	}
	return ""
}

// ParseIPBlock parses a CIDR or a single IP address (a /32 or /128). It
// returns why block is invalid, or "".
func ParseIPBlock(block string) (netip.Prefix, string) {
	if strings.Contains(block, "/") {
		prefix, err := netip.ParsePrefix(block)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("invalid CIDR %q: want an address and a prefix length, e.g. 10.0.0.0/8", block)
		}
		if prefix.Masked() != prefix {
			return netip.Prefix{}, fmt.Sprintf("CIDR %q has bits set after the prefix (want %s)", block, prefix.Masked())
		}
		return prefix, ""
	}
	addr, err := netip.ParseAddr(block)
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, fmt.Sprintf("invalid IP block %q: want a CIDR or an IP address", block)
	}
	return netip.PrefixFrom(addr, addr.BitLen()), ""
}

// Limits of spec.tracing.resourceAttributes.
const (
	maxTracingAttributes      = 32
	maxTracingAttributeLength = 256
)

// checkTracing checks MeshConfig spec.tracing.
func (l *loader) checkTracing(src Source, t *Tracing) {
	if t.Endpoint == "" {
		l.errorf(src, "spec.tracing.endpoint", "endpoint is required (the collector's OTLP receiver, ip:port)")
	} else if _, err := netip.ParseAddrPort(t.Endpoint); err != nil {
		l.errorf(src, "spec.tracing.endpoint", "invalid endpoint %q: want ip:port (a DNS name is not supported yet)", t.Endpoint)
	} else if netip.MustParseAddrPort(t.Endpoint).Port() == 0 {
		l.errorf(src, "spec.tracing.endpoint", "invalid endpoint %q: port 0", t.Endpoint)
	}
	switch t.Protocol {
	case "", TracingProtocolGRPC, TracingProtocolHTTP:
	default:
		l.errorf(src, "spec.tracing.protocol", "unknown protocol %q (want grpc or http)", t.Protocol)
	}
	if t.Sampling != nil && !(*t.Sampling >= 0 && *t.Sampling <= 100) {
		l.errorf(src, "spec.tracing.sampling", "sampling %v is not a percentage from 0 to 100", *t.Sampling)
	}
	if len(t.ResourceAttributes) > maxTracingAttributes {
		l.errorf(src, "spec.tracing.resourceAttributes", "%d attributes: at most %d", len(t.ResourceAttributes), maxTracingAttributes)
	}
	for _, k := range slices.Sorted(maps.Keys(t.ResourceAttributes)) {
		v := t.ResourceAttributes[k]
		switch {
		case k == "" || len(k) > maxTracingAttributeLength:
			l.errorf(src, "spec.tracing.resourceAttributes", "attribute name %q: want 1 to %d characters", k, maxTracingAttributeLength)
		case len(v) > maxTracingAttributeLength:
			l.errorf(src, "spec.tracing.resourceAttributes."+k, "value longer than %d characters", maxTracingAttributeLength)
		}
	}
}

// Limits of spec.accessLog.
const (
	maxAccessLogFields    = 64
	maxAccessLogFieldName = 128
	maxAccessLogPath      = 4096
)

// checkAccessLog checks MeshConfig spec.accessLog: the path, the format and
// each field's format string (an operator the proxy does not implement is
// named).
func (l *loader) checkAccessLog(src Source, a *AccessLog) {
	switch p := a.Path; {
	case p == "":
	case len(p) > maxAccessLogPath:
		l.errorf(src, "spec.accessLog.path", "path longer than %d characters", maxAccessLogPath)
	case !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || strings.HasSuffix(p, "/"):
		l.errorf(src, "spec.accessLog.path", "invalid path %q: want /dev/stdout, /dev/stderr or an absolute file path", p)
	}
	switch a.Format {
	case "", AccessLogFormatJSON:
	default:
		l.errorf(src, "spec.accessLog.format", "unknown format %q (want json)", a.Format)
	}
	if len(a.Fields) > maxAccessLogFields {
		l.errorf(src, "spec.accessLog.fields", "%d fields: at most %d", len(a.Fields), maxAccessLogFields)
	}
	for _, name := range slices.Sorted(maps.Keys(a.Fields)) {
		if name == "" || len(name) > maxAccessLogFieldName {
			l.errorf(src, "spec.accessLog.fields", "field name %q: want 1 to %d characters", name, maxAccessLogFieldName)
			continue
		}
		if _, err := logformat.Parse(a.Fields[name]); err != nil {
			l.errorf(src, "spec.accessLog.fields."+name, "%v", err)
		}
	}
}

// maxExtAuthTimeout bounds a SecurityPolicy extAuth timeout, and
// maxExtAuthBodyBytes its bodyToExtAuth.maxRequestBytes (the proxy's
// bound: the body is held while the check runs).
const (
	maxExtAuthTimeout   = time.Minute
	maxExtAuthBodyBytes = 1 << 20
)

// checkSecurityExtAuth validates a SecurityPolicy extAuth section: an http
// service whose backendRef resolves as a route backend's (from the
// policy's namespace), or a grpc one (an HTTP/2 port), a path of a path value, header lists as the
// ExternalAuth filter's, failureMode Open or Closed, a timeout of 1ms to
// 1m, a body limit of 1 byte to 1 MiB.
func (l *loader) checkSecurityExtAuth(sp *SecurityPolicy, p string, ea *ExtAuth, services map[nsName]*Service) {
	src := sp.Source
	// The backendRef resolves as one of a route in the policy's namespace.
	owner := &HTTPRoute{}
	owner.Name, owner.Namespace, owner.Source = sp.Name, sp.Namespace, sp.Source
	f := &gwapiv1.HTTPExternalAuthFilter{ExternalAuthProtocol: gwapiv1.HTTPRouteExternalAuthHTTPProtocol}
	switch {
	case ea.HTTP != nil && ea.GRPC != nil:
		l.errorf(src, p+".grpc", "only one of http and grpc may be set")
	case ea.GRPC != nil:
		f.ExternalAuthProtocol, f.BackendRef = gwapiv1.HTTPRouteExternalAuthGRPCProtocol, ea.GRPC.BackendRef
		f.GRPCAuthConfig = &gwapiv1.GRPCAuthConfig{AllowedRequestHeaders: ea.HeadersToExtAuth}
		l.checkExternalAuthAt(owner, p, f, services, externalAuthFields{backendRef: ".grpc.backendRef", grpcHeaders: ".headersToExtAuth"})
	case ea.HTTP == nil:
		l.errorf(src, p+".http", "http or grpc is required (the authorization service)")
	default:
		f.BackendRef = ea.HTTP.BackendRef
		f.HTTPAuthConfig = &gwapiv1.HTTPAuthConfig{Path: ea.HTTP.Path, AllowedRequestHeaders: ea.HeadersToExtAuth,
			AllowedResponseHeaders: ea.HTTP.HeadersToBackend}
		l.checkExternalAuthAt(owner, p, f, services, externalAuthFields{
			backendRef: ".http.backendRef", path: ".http.path", requestHeaders: ".headersToExtAuth", responseHeaders: ".http.headersToBackend"})
	}
	switch ea.FailureMode {
	case "", ExtAuthFailOpen, ExtAuthFailClosed:
	default:
		l.errorf(src, p+".failureMode", "unknown failure mode %q (want Open or Closed)", ea.FailureMode)
	}
	if ea.Timeout != "" {
		if d, ok := l.checkDuration(src, p+".timeout", ea.Timeout, time.Millisecond); ok && d > maxExtAuthTimeout {
			l.errorf(src, p+".timeout", "%s is longer than %s", ea.Timeout, maxExtAuthTimeout)
		}
	}
	if b := ea.BodyToExtAuth; b != nil && (b.MaxRequestBytes < 1 || b.MaxRequestBytes > maxExtAuthBodyBytes) {
		l.errorf(src, p+".bodyToExtAuth.maxRequestBytes", "%d bytes: want 1 to %d", b.MaxRequestBytes, maxExtAuthBodyBytes)
	}
}
