package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func grpcRoute(name, extra string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: %s
spec:
  parentRefs:
  - name: edge
  hostnames: ["grpc.example.com"]
  rules:
%s`, name, extra)
}

// TestGRPCRouteAsHTTPRoute: a GRPCRoute is accepted, reports its status
// under its own kind and spec, and is held as the HTTPRoute that routes as
// it does: method matches as /service/method paths, header matches,
// filters and weighted backendRefs kept.
func TestGRPCRouteAsHTTPRoute(t *testing.T) {
	t.Parallel()
	route := grpcRoute("calls", `  - name: echo
    matches:
    - method: {service: pkg.Echo, method: Echo}
      headers:
      - {name: version, value: two}
    - method: {service: pkg.Echo}
    - method: {method: Ping}
    - method: {type: RegularExpression, service: "pkg\\..*", method: "Get.*"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: x-via, value: grpc}]
    backendRefs:
    - {name: orders, port: 8080, weight: 3}
    - {name: orders, port: 8080, weight: 1}
`)
	r := Evaluate(evalInput("calls", route))
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	checkStatuses(t, r, []wantStatus{{kind: KindGRPCRoute, name: "calls", state: StateAccepted,
		conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"}}})
	s := findStatus(r, KindGRPCRoute, "calls")
	if _, ok := s.Object.Spec.(gwapiv1.GRPCRouteSpec); !ok || s.Object.Kind != KindGRPCRoute {
		t.Errorf("status object %s with spec %T, want GRPCRoute with its GRPCRouteSpec", s.Object.Kind, s.Object.Spec)
	}
	gw := findStatus(r, KindGateway, "edge")
	kinds := gw.Object.Status.Listeners[0].SupportedKinds
	if !slices.ContainsFunc(kinds, func(k gwapiv1.RouteGroupKind) bool { return k.Kind == KindGRPCRoute }) {
		t.Errorf("listener supportedKinds %v: no GRPCRoute", kinds)
	}
	if n := gw.Object.Status.Listeners[0].AttachedRoutes; n != 1 {
		t.Errorf("attachedRoutes %d, want 1", n)
	}
	if len(r.Set.HTTPRoutes) != 1 || r.Set.HTTPRoutes[0].RouteKind() != KindGRPCRoute {
		t.Fatalf("set routes %v", routeNames(r.Set))
	}
	rule := r.Set.HTTPRoutes[0].Spec.Rules[0]
	var paths []string
	for _, m := range rule.Matches {
		paths = append(paths, string(*m.Path.Type)+" "+*m.Path.Value)
	}
	want := []string{"Exact /pkg.Echo/Echo", "PathPrefix /pkg.Echo", `RegularExpression /[^/]+/Ping`, `RegularExpression /(?:pkg\..*)/(?:Get.*)`}
	if !slices.Equal(paths, want) {
		t.Errorf("paths %q, want %q", paths, want)
	}
	if h := rule.Matches[0].Headers; len(h) != 1 || h[0].Name != "version" || h[0].Value != "two" {
		t.Errorf("headers %+v", h)
	}
	if len(rule.Filters) != 1 || rule.Filters[0].Type != gwapiv1.HTTPRouteFilterRequestHeaderModifier || len(rule.BackendRefs) != 2 || *rule.BackendRefs[0].Weight != 3 {
		t.Errorf("filters %+v backendRefs %+v", rule.Filters, rule.BackendRefs)
	}
}

// TestGRPCRouteErrors: what is wrong with a GRPCRoute is reported with
// file, line and field, and rejects it.
func TestGRPCRouteErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, rules, want string
	}{
		{"no service or method", "  - matches:\n    - method: {type: Exact}\n", "bad.yaml:11: spec.rules[0].matches[0].method: one or both of service and method are required"},
		{"bad service name", "  - matches:\n    - method: {service: \"a/b\"}\n", `bad.yaml:11: spec.rules[0].matches[0].method.service: invalid service name "a/b"`},
		{"bad method regex", "  - matches:\n    - method: {type: RegularExpression, method: \"(\"}\n", `bad.yaml:11: spec.rules[0].matches[0].method.method: `},
		{"HTTPRoute filter", "  - filters:\n    - type: URLRewrite\n", `bad.yaml:11: spec.rules[0].filters[0].type: unknown GRPCRoute filter type "URLRewrite"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Evaluate(evalInput("bad", grpcRoute("bad", tt.rules)))
			if !slices.ContainsFunc(r.Errors, func(e *Error) bool { return strings.HasPrefix(e.Error(), tt.want) }) {
				t.Errorf("errors %q, want one starting %q", r.Errors, tt.want)
			}
			if s := findStatus(r, KindGRPCRoute, "bad"); s == nil || s.State != StateRejected {
				t.Errorf("status %+v, want rejected", s)
			}
		})
	}
}

// TestGRPCRouteListenerKinds: a listener whose allowedRoutes.kinds lists
// HTTPRoute only does not take a GRPCRoute (NotAllowedByListeners), and
// lists HTTPRoute alone in supportedKinds; a GRPCRoute named as an
// HTTPRoute of its namespace is refused.
func TestGRPCRouteListenerKinds(t *testing.T) {
	t.Parallel()
	gateway := strings.Replace(evalGateway, `    hostname: "*.example.com"`+"\n", `    hostname: "*.example.com"`+"\n    allowedRoutes:\n      kinds: [{kind: HTTPRoute}]\n", 1)
	in := evalInput("calls", grpcRoute("calls", "  - backendRefs: [{name: orders, port: 8080}]\n"),
		"same", evalRoute("same", "orders", ""), "same-grpc", grpcRoute("same", "  - backendRefs: [{name: orders, port: 8080}]\n"))
	in.Files[0].Data = []byte(gateway)
	r := Evaluate(in)
	checkStatuses(t, r, []wantStatus{{kind: KindGRPCRoute, name: "calls", state: StateAccepted, reason: "NotAllowedByListeners",
		conditions: []string{"Accepted=False/NotAllowedByListeners"}, message: "does not accept routes of kind GRPCRoute"}})
	if kinds := findStatus(r, KindGateway, "edge").Object.Status.Listeners[0].SupportedKinds; len(kinds) != 1 || kinds[0].Kind != KindHTTPRoute {
		t.Errorf("supportedKinds %v, want HTTPRoute only", kinds)
	}
	if !slices.ContainsFunc(r.Errors, func(e *Error) bool {
		return strings.Contains(e.Error(), `same-grpc.yaml:4: metadata.name: GRPCRoute "same" has the name of an HTTPRoute`)
	}) {
		t.Errorf("errors %q: no name clash", r.Errors)
	}
}
