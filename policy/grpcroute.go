package policy

import (
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// KindGRPCRoute routes gRPC calls (gateway.networking.k8s.io/v1). A
// GRPCRoute is held in Set.HTTPRoutes as the HTTPRoute it is equivalent to
// (see grpcAsHTTPRoute), with its own spec in HTTPRoute.GRPC: it attaches,
// validates, compiles and reports status as an HTTPRoute does, under its
// own kind.
const KindGRPCRoute = "GRPCRoute"

// RouteKind is the kind the route was written as: KindGRPCRoute or
// KindHTTPRoute.
func (r *HTTPRoute) RouteKind() string {
	if r.routeKind != "" {
		return r.routeKind // a TCPRoute or TLSRoute (l4Shim)
	}
	if r.GRPC != nil {
		return KindGRPCRoute
	}
	return KindHTTPRoute
}

// newGRPCRoute is the resource of a GRPCRoute document.
func newGRPCRoute(k *kind, spec gwapiv1.GRPCRouteSpec, meta decodedMeta) any {
	return &HTTPRoute{HTTPRoute: gwapiv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
		ObjectMeta: meta.objectMeta,
		Spec:       grpcAsHTTPRoute(&spec),
	}, GRPC: &spec, Source: meta.source}
}

// grpcAsHTTPRoute is the HTTPRoute spec that routes as the GRPCRoute spec
// does (as Envoy Gateway translates one): a method match is a match on
// the path /<service>/<method> (Exact with both: an exact path; with the
// service only: the path prefix /<service>; otherwise a regular
// expression), header matches and filters are the HTTPRoute's, and the
// rule, its name, backendRefs and their filters are kept. The compiled
// rules of a GRPCRoute also match gRPC requests only (content-type
// application/grpc).
func grpcAsHTTPRoute(g *gwapiv1.GRPCRouteSpec) gwapiv1.HTTPRouteSpec {
	out := gwapiv1.HTTPRouteSpec{CommonRouteSpec: g.CommonRouteSpec, Hostnames: g.Hostnames}
	for _, rule := range g.Rules {
		hr := gwapiv1.HTTPRouteRule{Name: rule.Name, SessionPersistence: rule.SessionPersistence}
		for _, m := range rule.Matches {
			hm := gwapiv1.HTTPRouteMatch{Path: grpcMethodPath(m.Method)}
			for _, h := range m.Headers {
				typ := gwapiv1.HeaderMatchExact
				if h.Type != nil && *h.Type == gwapiv1.GRPCHeaderMatchRegularExpression {
					typ = gwapiv1.HeaderMatchRegularExpression
				}
				hm.Headers = append(hm.Headers, gwapiv1.HTTPHeaderMatch{Type: &typ, Name: gwapiv1.HTTPHeaderName(h.Name), Value: h.Value})
			}
			hr.Matches = append(hr.Matches, hm)
		}
		for _, f := range rule.Filters {
			hr.Filters = append(hr.Filters, grpcFilter(f))
		}
		for _, br := range rule.BackendRefs {
			hb := gwapiv1.HTTPBackendRef{BackendRef: br.BackendRef}
			for _, f := range br.Filters {
				hb.Filters = append(hb.Filters, grpcFilter(f))
			}
			hr.BackendRefs = append(hr.BackendRefs, hb)
		}
		out.Rules = append(out.Rules, hr)
	}
	return out
}

// grpcFilter is the HTTPRoute filter of a GRPCRoute filter (same types).
func grpcFilter(f gwapiv1.GRPCRouteFilter) gwapiv1.HTTPRouteFilter {
	return gwapiv1.HTTPRouteFilter{
		Type:                   gwapiv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

// grpcMethodPath is the path match of a method match; nil (any path) for
// none.
func grpcMethodPath(m *gwapiv1.GRPCMethodMatch) *gwapiv1.HTTPPathMatch {
	if m == nil {
		return nil
	}
	svc, method := deref(m.Service), deref(m.Method)
	path := func(typ gwapiv1.PathMatchType, value string) *gwapiv1.HTTPPathMatch {
		return &gwapiv1.HTTPPathMatch{Type: &typ, Value: &value}
	}
	if grpcMethodProblem(m) != "" {
		return nil // reported by checkGRPCRoute: the route is rejected
	}
	if m.Type != nil && *m.Type == gwapiv1.GRPCMethodMatchRegularExpression {
		return path(gwapiv1.PathMatchRegularExpression, "/"+orAny(svc)+"/"+orAny(method))
	}
	switch {
	case svc != "" && method != "":
		return path(gwapiv1.PathMatchExact, "/"+svc+"/"+method)
	case svc != "":
		return path(gwapiv1.PathMatchPathPrefix, "/"+svc)
	default:
		return path(gwapiv1.PathMatchRegularExpression, "/[^/]+/"+regexp.QuoteMeta(method))
	}
}

func orAny(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return "(?:" + re + ")"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// The names an Exact method match accepts, as the Gateway API's CRD
// validates them.
var (
	grpcServiceName = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	grpcMethodName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

// grpcMethodProblem says what is wrong with a method match, or "".
func grpcMethodProblem(m *gwapiv1.GRPCMethodMatch) string {
	svc, method := deref(m.Service), deref(m.Method)
	if svc == "" && method == "" {
		return "method: one or both of service and method are required"
	}
	typ := gwapiv1.GRPCMethodMatchExact
	if m.Type != nil {
		typ = *m.Type
	}
	switch typ {
	case gwapiv1.GRPCMethodMatchExact:
		if svc != "" && !grpcServiceName.MatchString(svc) {
			return fmt.Sprintf("method.service: invalid service name %q (want a dot-separated name of letters, digits and _)", svc)
		}
		if method != "" && !grpcMethodName.MatchString(method) {
			return fmt.Sprintf("method.method: invalid method name %q (want letters, digits and _)", method)
		}
	case gwapiv1.GRPCMethodMatchRegularExpression:
		for field, re := range map[string]string{"service": svc, "method": method} {
			if re == "" {
				continue
			}
			if msg := checkRegexp(re); msg != "" {
				return "method." + field + ": " + msg
			}
			if strings.Contains(re, "/") {
				return fmt.Sprintf("method.%s: %q may not contain /", field, re)
			}
		}
	default:
		return fmt.Sprintf("method.type: unknown method match type %q (want Exact or RegularExpression)", typ)
	}
	return ""
}

// checkGRPCRoute checks what a GRPCRoute has of its own (its method
// matches, its header match types and filter types); the rest is checked
// as the HTTPRoute it is equivalent to. A GRPCRoute may not share its
// namespace and name with an HTTPRoute.
func (l *loader) checkGRPCRoute(r *HTTPRoute, ix *setIndex) {
	src := r.Source
	if ix.httpRouteNames[nsName{r.Namespace, r.Name}] {
		l.errorf(src, "metadata.name", "GRPCRoute %q has the name of an HTTPRoute in namespace %q: rename one", r.Name, cmpOrDefault(r.Namespace))
	}
	for i, rule := range r.GRPC.Rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		for j, m := range rule.Matches {
			mp := fmt.Sprintf("%s.matches[%d]", p, j)
			if m.Method != nil {
				if msg := grpcMethodProblem(m.Method); msg != "" {
					field, text, _ := strings.Cut(msg, ": ")
					l.errorf(src, mp+"."+field, "%s", text)
				}
			}
		}
		for k, f := range rule.Filters {
			l.checkGRPCFilterType(src, fmt.Sprintf("%s.filters[%d].type", p, k), f.Type)
		}
		for b, br := range rule.BackendRefs {
			for k, f := range br.Filters {
				l.checkGRPCFilterType(src, fmt.Sprintf("%s.backendRefs[%d].filters[%d].type", p, b, k), f.Type)
			}
		}
	}
}

// checkGRPCFilterType reports a filter type a GRPCRoute does not have
// (the HTTPRoute's URLRewrite, RequestRedirect, CORS...).
func (l *loader) checkGRPCFilterType(src Source, p string, typ gwapiv1.GRPCRouteFilterType) {
	switch typ {
	case gwapiv1.GRPCRouteFilterRequestHeaderModifier, gwapiv1.GRPCRouteFilterResponseHeaderModifier,
		gwapiv1.GRPCRouteFilterRequestMirror, gwapiv1.GRPCRouteFilterExtensionRef:
	default:
		l.errorf(src, p, "unknown GRPCRoute filter type %q (want RequestHeaderModifier, ResponseHeaderModifier or RequestMirror)", typ)
	}
}

func cmpOrDefault(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// ListenerAllowsKind reports whether a listener takes routes of a kind
// (KindHTTPRoute or KindGRPCRoute): those its allowedRoutes.kinds lists,
// or, without a list, both.
func ListenerAllowsKind(ls *gwapiv1.Listener, kindName string) bool {
	ar := ls.AllowedRoutes
	if ar == nil || len(ar.Kinds) == 0 {
		return true
	}
	for _, k := range ar.Kinds {
		if (k.Group == nil || *k.Group == GatewayGroup) && string(k.Kind) == kindName {
			return true
		}
	}
	return false
}

// routeKinds are the route kinds an HTTP or HTTPS listener takes.
var routeKinds = []string{KindHTTPRoute, KindGRPCRoute}

// supportedKinds is a listener's status.supportedKinds: the route kinds
// of its allowedRoutes.kinds that meshgate serves, or, without a list,
// HTTPRoute and GRPCRoute.
func supportedKinds(ls *gwapiv1.Listener) []gwapiv1.RouteGroupKind {
	var out []gwapiv1.RouteGroupKind
	kinds := routeKinds
	if k := listenerRouteKind(ls.Protocol); k != KindHTTPRoute {
		kinds = []string{k} // TCP, TLS: TCPRoute, TLSRoute (l4route.go)
	}
	for _, k := range kinds {
		if ListenerAllowsKind(ls, k) {
			out = append(out, gwapiv1.RouteGroupKind{Group: ptrTo(gwapiv1.Group(GatewayGroup)), Kind: gwapiv1.Kind(k)})
		}
	}
	return out
}
