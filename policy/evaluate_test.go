package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const evalGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  gatewayClassName: meshgate
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
`

const evalServices = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  ports:
  - port: 8080
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: users
spec:
  ports:
  - port: 8080
`

// evalRoute is an HTTPRoute named name to backend on edge; extra is added
// to its spec.
func evalRoute(name, backend, extra string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: %s
spec:
  parentRefs:
  - name: edge
  rules:
  - backendRefs:
    - name: %s
      port: 8080
%s`, name, backend, extra)
}

// evalInput is an input of the gateway, the services and files named
// "name.yaml" in the order given as name, content pairs.
func evalInput(pairs ...string) Input {
	in := Input{Files: []File{{Name: "gateway.yaml", Data: []byte(evalGateway)}, {Name: "services.yaml", Data: []byte(evalServices)}}}
	for i := 0; i+1 < len(pairs); i += 2 {
		in.Files = append(in.Files, File{Name: pairs[i] + ".yaml", Data: []byte(pairs[i+1])})
	}
	return in
}

// wantStatus is what a test expects of one resource's status.
type wantStatus struct {
	kind, name, state, reason string
	// conditions are "type=status/reason" strings that must all be in the
	// resource's status (top level, each listener or each parent).
	conditions []string
	// message must be in some condition's message.
	message string
}

func findStatus(r *Result, kind, name string) *ResourceStatus {
	for i := range r.Statuses {
		if s := &r.Statuses[i]; s.Kind == kind && s.Name == name {
			return s
		}
	}
	return nil
}

func conditionStrings(st StatusBlock) ([]string, []string) {
	var out, msgs []string
	add := func(cs []metav1.Condition) {
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
			msgs = append(msgs, c.Message)
		}
	}
	add(st.Conditions)
	for _, l := range st.Listeners {
		add(l.Conditions)
	}
	for _, p := range st.Parents {
		add(p.Conditions)
	}
	return out, msgs
}

func checkStatuses(t *testing.T, r *Result, want []wantStatus) {
	t.Helper()
	for _, w := range want {
		s := findStatus(r, w.kind, w.name)
		if s == nil {
			t.Errorf("no status of %s %s", w.kind, w.name)
			continue
		}
		if s.State != w.state || s.Reason != w.reason {
			t.Errorf("%s %s: state %s, reason %q; want %s, %q (problems %q)", w.kind, w.name, s.State, s.Reason, w.state, w.reason, s.Problems)
		}
		conds, msgs := conditionStrings(s.Object.Status)
		for _, c := range w.conditions {
			if !slices.Contains(conds, c) {
				t.Errorf("%s %s: no condition %s in %v", w.kind, w.name, c, conds)
			}
		}
		if w.message != "" && !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, w.message) }) {
			t.Errorf("%s %s: no condition message has %q: %q", w.kind, w.name, w.message, msgs)
		}
	}
}

func routeNames(s *Set) []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, r := range s.HTTPRoutes {
		out = append(out, r.Name)
	}
	return out
}

// TestEvaluateClassifies checks that each class of problem does what
// Evaluate says to its resource, and the statuses that say so.
func TestEvaluateClassifies(t *testing.T) {
	t.Parallel()
	good := evalRoute("good", "users", "")
	tests := []struct {
		name       string
		in         Input
		wantRoutes []string // of Result.Set
		wantErrors int      // of Result.Errors
		want       []wantStatus
		check      func(t *testing.T, r *Result)
	}{{
		name: "invalid route is rejected, the other serves",
		in: evalInput("good", good, "bad", evalRoute("bad", "orders", `    filters:
    - type: Nope
`)),
		wantRoutes: []string{"good"},
		wantErrors: 1,
		want: []wantStatus{
			{kind: KindHTTPRoute, name: "good", state: StateAccepted, conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"}},
			{kind: KindHTTPRoute, name: "bad", state: StateRejected, reason: "UnsupportedValue",
				conditions: []string{"Accepted=False/UnsupportedValue"}, message: `bad.yaml:13: spec.rules[0].filters[0].type: unknown filter type "Nope"`},
			{kind: KindGateway, name: "edge", state: StateAccepted, conditions: []string{"Accepted=True/Accepted", "Programmed=True/Programmed", "Programmed=True/Programmed"}},
		},
		check: func(t *testing.T, r *Result) {
			if n := findStatus(r, KindGateway, "edge").Object.Status.Listeners[0].AttachedRoutes; n != 1 {
				t.Errorf("attachedRoutes %d, want 1 (the accepted route)", n)
			}
		},
	}, {
		name:       "backendRef to a missing Service: accepted, unresolved",
		in:         evalInput("good", good, "missing", evalRoute("missing", "nowhere", "")),
		wantRoutes: []string{"good", "missing"},
		wantErrors: 1,
		want: []wantStatus{{kind: KindHTTPRoute, name: "missing", state: StateAccepted, reason: "BackendNotFound",
			conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound"}, message: `missing.yaml:10: spec.rules[0].backendRefs[0].name: service "nowhere" not found`}},
	}, {
		name:       "backendRef of an unknown kind: accepted, unresolved",
		in:         evalInput("kind", strings.Replace(evalRoute("kind", "orders", ""), "    - name: orders", "    - name: orders\n      group: multicluster.x-k8s.io\n      kind: ServiceImport", 1)),
		wantRoutes: []string{"kind"},
		wantErrors: 1,
		want:       []wantStatus{{kind: KindHTTPRoute, name: "kind", state: StateAccepted, reason: "InvalidKind", conditions: []string{"ResolvedRefs=False/InvalidKind"}}},
	}, {
		name:       "backendRef to a port the Service lacks",
		in:         evalInput("port", strings.Replace(evalRoute("port", "orders", ""), "port: 8080", "port: 9999", 1)),
		want:       []wantStatus{{kind: KindHTTPRoute, name: "port", state: StateAccepted, reason: "BackendNotFound", conditions: []string{"ResolvedRefs=False/BackendNotFound"}}},
		wantRoutes: []string{"port"}, wantErrors: 1,
	}, {
		name: "hostname intersecting no listener: not attached to that parent",
		in:   evalInput("host", evalRoute("host", "orders", "  hostnames: [\"other.org\"]\n")),
		want: []wantStatus{{kind: KindHTTPRoute, name: "host", state: StateAccepted, reason: "NoMatchingListenerHostname",
			conditions: []string{"Accepted=False/NoMatchingListenerHostname", "ResolvedRefs=True/ResolvedRefs"}, message: "host.yaml:12: spec.hostnames"}},
		wantRoutes: []string{"host"}, wantErrors: 1,
		check: func(t *testing.T, r *Result) {
			if n := findStatus(r, KindGateway, "edge").Object.Status.Listeners[0].AttachedRoutes; n != 0 {
				t.Errorf("attachedRoutes %d, want 0", n)
			}
		},
	}, {
		name: "one parent missing, the other attached",
		in:   evalInput("two", strings.Replace(evalRoute("two", "orders", ""), "  - name: edge\n", "  - name: edge\n  - name: gone\n", 1)),
		want: []wantStatus{{kind: KindHTTPRoute, name: "two", state: StateAccepted, reason: "NoMatchingParent",
			conditions: []string{"Accepted=True/Accepted", "Accepted=False/NoMatchingParent"}}},
		wantRoutes: []string{"two"}, wantErrors: 1,
	}, {
		name: "listener not allowing the route's namespace",
		in:   evalInput("ns", strings.Replace(strings.Replace(evalRoute("ns", "orders", ""), "  name: ns\n", "  name: ns\n  namespace: shop\n", 1), "  - name: edge\n", "  - name: edge\n    namespace: default\n", 1)),
		want: []wantStatus{{kind: KindHTTPRoute, name: "ns", state: StateAccepted, reason: "NotAllowedByListeners", conditions: []string{"Accepted=False/NotAllowedByListeners"}}},
		// The backend is in namespace shop: not found either.
		wantRoutes: []string{"ns"}, wantErrors: 2,
	}, {
		name: "one invalid listener: the Gateway keeps the other",
		in: Input{Files: []File{{Name: "gw.yaml", Data: []byte(evalGateway + `  - name: secure
    port: 8443
    protocol: UDP
`)}, {Name: "services.yaml", Data: []byte(evalServices)}, {Name: "r.yaml", Data: []byte(evalRoute("r", "orders", ""))}}},
		want: []wantStatus{{kind: KindGateway, name: "edge", state: StateAccepted, reason: "ListenersNotValid",
			conditions: []string{"Accepted=True/ListenersNotValid", "Accepted=False/UnsupportedProtocol", "Programmed=False/Invalid", "Programmed=True/Programmed"},
			message:    "gw.yaml:14: spec.listeners[1].protocol"}},
		wantRoutes: []string{"r"}, wantErrors: 1,
		check: func(t *testing.T, r *Result) {
			g := r.Set.Gateways[0]
			if len(g.Spec.Listeners) != 1 || g.Spec.Listeners[0].Name != "http" {
				t.Errorf("served listeners %v, want http only", g.Spec.Listeners)
			}
			ls := findStatus(r, KindGateway, "edge").Object.Status.Listeners
			if ls[0].AttachedRoutes != 1 || ls[1].AttachedRoutes != 0 {
				t.Errorf("attachedRoutes %d, %d; want 1, 0", ls[0].AttachedRoutes, ls[1].AttachedRoutes)
			}
		},
	}, {
		name: "conflicting listeners",
		in: Input{Files: []File{{Name: "gw.yaml", Data: []byte(evalGateway + `  - name: again
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
`)}}},
		want: []wantStatus{{kind: KindGateway, name: "edge", state: StateAccepted, reason: "ListenersNotValid",
			conditions: []string{"Conflicted=True/HostnameConflict", "Conflicted=False/NoConflicts"}}},
		wantErrors: 1,
	}, {
		name: "a Gateway without a valid listener is rejected, its routes unattached",
		in: Input{Files: []File{{Name: "gateway.yaml", Data: []byte(strings.Replace(evalGateway, "protocol: HTTP", "protocol: UDP", 1))},
			{Name: "services.yaml", Data: []byte(evalServices)}, {Name: "r.yaml", Data: []byte(evalRoute("r", "orders", ""))}}},
		want: []wantStatus{
			{kind: KindGateway, name: "edge", state: StateRejected, reason: "ListenersNotValid", conditions: []string{"Accepted=False/ListenersNotValid", "Programmed=False/Invalid"}},
			{kind: KindHTTPRoute, name: "r", state: StateAccepted, reason: "NoMatchingParent", message: "(it is rejected: see gateway.yaml:1)"},
		},
		wantRoutes: []string{"r"}, wantErrors: 1,
	}, {
		name: "cascade: a rejected Service leaves its routes unresolved",
		in: Input{Files: []File{{Name: "gateway.yaml", Data: []byte(evalGateway)}, {Name: "svc.yaml", Data: []byte(strings.Replace(evalServices, "port: 8080", "port: 0", 1))},
			{Name: "r.yaml", Data: []byte(evalRoute("r", "orders", ""))}}},
		want: []wantStatus{
			{kind: KindService, name: "orders", state: StateRejected, reason: "Invalid", conditions: []string{"Accepted=False/Invalid"}, message: "svc.yaml:7: spec.ports[0].port: port 0 is out of range"},
			{kind: KindService, name: "users", state: StateAccepted, conditions: []string{"Accepted=True/Accepted"}},
			{kind: KindHTTPRoute, name: "r", state: StateAccepted, reason: "BackendNotFound", message: `service "orders" not found (it is rejected: see svc.yaml:1)`},
		},
		wantRoutes: []string{"r"}, wantErrors: 2, // the cascade is a status, not another error of the files
	}, {
		name: "duplicate: the second is rejected",
		in:   evalInput("a", evalRoute("r", "orders", ""), "b", evalRoute("r", "users", "")),
		want: []wantStatus{{kind: KindHTTPRoute, name: "r", state: StateAccepted}},
		check: func(t *testing.T, r *Result) {
			var states []string
			for _, s := range r.Statuses {
				if s.Kind == KindHTTPRoute {
					states = append(states, s.File+":"+s.State)
				}
			}
			if !slices.Equal(states, []string{"a.yaml:Accepted", "b.yaml:Rejected"}) {
				t.Errorf("statuses %v", states)
			}
		},
		wantRoutes: []string{"r"}, wantErrors: 1,
	}, {
		name:       "a route without parentRefs: accepted, attached nowhere",
		in:         evalInput("orphan", strings.Replace(evalRoute("orphan", "orders", ""), "  parentRefs:\n  - name: edge\n", "", 1)),
		wantRoutes: []string{"orphan"},
		want: []wantStatus{{kind: KindHTTPRoute, name: "orphan", state: StateAccepted, reason: ReasonNoParentRefs,
			conditions: []string{"Accepted=True/Accepted", ConditionAttached + "=False/" + ReasonNoParentRefs}}},
	}, {
		name: "a rejected MeshConfig without a last good version: nothing to serve",
		in: evalInput("mesh", `apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
spec:
  defaultAction: MAYBE
`, "r", good),
		want:       []wantStatus{{kind: KindMeshConfig, name: "mesh", state: StateRejected, reason: "Invalid", conditions: []string{"Accepted=False/Invalid"}}},
		wantErrors: 1,
		check: func(t *testing.T, r *Result) {
			if r.Set != nil {
				t.Errorf("Set served with a rejected MeshConfig")
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Evaluate(tt.in)
			if len(r.Errors) != tt.wantErrors {
				t.Errorf("%d errors, want %d: %v", len(r.Errors), tt.wantErrors, r.Errors)
			}
			if tt.wantRoutes != nil && !slices.Equal(routeNames(r.Set), tt.wantRoutes) {
				t.Errorf("served routes %v, want %v", routeNames(r.Set), tt.wantRoutes)
			}
			checkStatuses(t, r, tt.want)
			if tt.check != nil {
				tt.check(t, r)
			}
			// Load reports exactly the errors of Evaluate.
			set, err := LoadInput(tt.in)
			var list ErrorList
			switch {
			case len(r.Errors) == 0:
				if err != nil || set == nil {
					t.Errorf("Load: %v; want a set, as Evaluate has no error", err)
				}
			case set != nil || !errors.As(err, &list) || list.Error() != r.Errors.Error():
				t.Errorf("Load: %v; want the errors of Evaluate: %v", err, r.Errors)
			}
		})
	}
}

// TestEvaluateLastGood checks that a resource rejected now keeps its last
// good version, that one failing against the current set is dropped, and
// that the resources of a file that cannot be read any more are kept.
func TestEvaluateLastGood(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		before Input // evaluated first: its Set is LastGood
		after  Input
		want   []wantStatus
		check  func(t *testing.T, r *Result)
	}{{
		name:   "an invalid route keeps its last good version",
		before: evalInput("a", evalRoute("a", "orders", ""), "b", evalRoute("b", "users", "")),
		after: evalInput("a", evalRoute("a", "users", ""), "b", evalRoute("b", "orders", `    filters:
    - type: Nope
`)),
		want: []wantStatus{
			{kind: KindHTTPRoute, name: "a", state: StateAccepted},
			{kind: KindHTTPRoute, name: "b", state: StateLastGood, reason: "UnsupportedValue",
				conditions: []string{"Accepted=False/UnsupportedValue", ConditionLastGoodVersion + "=True/" + ReasonLastGoodVersionServing},
				message:    "the last good version (b.yaml:1) is serving"},
		},
		check: func(t *testing.T, r *Result) {
			// a's change is applied; b serves as it was (to users).
			backends := map[string]string{}
			for _, rt := range r.Set.HTTPRoutes {
				backends[rt.Name] = string(rt.Spec.Rules[0].BackendRefs[0].Name)
			}
			if backends["a"] != "users" || backends["b"] != "users" {
				t.Errorf("served backends %v, want a and b to users", backends)
			}
		},
	}, {
		name:   "a last good version that fails now is dropped",
		before: evalInput(),
		after: Input{Files: []File{
			{Name: "gateway.yaml", Data: []byte(strings.Replace(evalGateway, "  listeners:", "  addresses:\n  - value: nowhere\n  listeners:", 1))},
			{Name: "services.yaml", Data: []byte(evalServices)},
			{Name: "edge.yaml", Data: []byte(strings.ReplaceAll(strings.Split(evalServices, "---")[0], "orders", "edge"))},
		}},
		want: []wantStatus{
			{kind: KindService, name: "edge", state: StateAccepted},
			{kind: KindGateway, name: "edge", state: StateRejected, reason: "Invalid", message: "its last good version (gateway.yaml:1) is not serving either: gateway.yaml:4: metadata.name: Gateway \"edge\" has the name of a Service"},
		},
		check: func(t *testing.T, r *Result) {
			if len(r.Set.Gateways) != 0 {
				t.Errorf("served gateways %v, want none", r.Set.Gateways)
			}
		},
	}, {
		name:   "a file that stops parsing keeps the last good resources it held",
		before: evalInput("a", evalRoute("a", "orders", "")+"---\n"+evalRoute("a2", "orders", "")),
		after:  evalInput("a", evalRoute("a", "orders", "")+"---\nkind: [\n"),
		want: []wantStatus{
			{kind: KindHTTPRoute, name: "a", state: StateAccepted},
			{kind: KindHTTPRoute, name: "a2", state: StateLastGood, reason: ReasonFileNotRead, conditions: []string{ConditionLastGoodVersion + "=True/" + ReasonLastGoodVersionServing},
				message: "its file could not be read as resources"},
		},
		check: func(t *testing.T, r *Result) {
			if !slices.Equal(routeNames(r.Set), []string{"a", "a2"}) {
				t.Errorf("served routes %v, want a, a2", routeNames(r.Set))
			}
		},
	}, {
		name:   "a file that cannot be read keeps its last good resources",
		before: evalInput("a", evalRoute("a", "orders", "")),
		after:  Input{Files: evalInput().Files, ReadErrors: ErrorList{{File: "a.yaml", Message: "reading policy: permission denied"}}},
		want:   []wantStatus{{kind: KindHTTPRoute, name: "a", state: StateLastGood, reason: ReasonFileNotRead, message: "permission denied"}},
	}, {
		name:   "a deleted file deletes its resources",
		before: evalInput("a", evalRoute("a", "orders", "")),
		after:  evalInput(),
		check: func(t *testing.T, r *Result) {
			if len(r.Set.HTTPRoutes) != 0 || findStatus(r, KindHTTPRoute, "a") != nil {
				t.Errorf("route a still there")
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := Evaluate(tt.before)
			if len(before.Errors) > 0 || before.Set == nil {
				t.Fatalf("before: %v", before.Errors)
			}
			tt.after.LastGood = before.Set
			r := Evaluate(tt.after)
			checkStatuses(t, r, tt.want)
			if tt.check != nil {
				tt.check(t, r)
			}
			// Without a last good set, nothing of it serves.
			tt.after.LastGood = nil
			if fresh := Evaluate(tt.after); fresh.Set != nil {
				for _, s := range fresh.Statuses {
					if s.State == StateLastGood {
						t.Errorf("%s %s: last good without a last good set", s.Kind, s.Name)
					}
				}
			}
		})
	}
}

// TestEvaluateSecurityFailsClosed checks that a rejected SecurityPolicy
// without a last good version denies every request to its targets.
func TestEvaluateSecurityFailsClosed(t *testing.T) {
	t.Parallel()
	policyDoc := func(action string) string {
		return fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata:
  name: guard
spec:
  targetRefs:
  - kind: Service
    name: orders
  - kind: Service
    name: nowhere
  rules:
  - action: %s
    from:
    - namespaces: [shop]
`, action)
	}
	r := Evaluate(evalInput("sp", policyDoc("MAYBE")))
	if r.Set == nil || len(r.Set.SecurityPolicies) != 1 {
		t.Fatalf("set %v: want the fail-closed policy", r.Set)
	}
	sp := r.Set.SecurityPolicies[0]
	if !sp.FailClosed() || len(sp.Spec.Rules) != 1 || sp.Spec.Rules[0].Action != ActionDeny || len(sp.Spec.Rules[0].From)+len(sp.Spec.Rules[0].To) != 0 {
		t.Errorf("served policy %+v: want a deny-all", sp.Spec)
	}
	if len(sp.Spec.TargetRefs) != 1 || sp.Spec.TargetRefs[0].Name != "orders" {
		t.Errorf("targets %v, want orders (the one that exists)", sp.Spec.TargetRefs)
	}
	checkStatuses(t, r, []wantStatus{{kind: KindSecurityPolicy, name: "guard", state: StateFailClosed, reason: "Invalid",
		conditions: []string{"Accepted=False/Invalid", ConditionFailClosed + "=True/" + ReasonDenyAll},
		message:    `every request to Service "orders" is denied until it is fixed`}})

	// With a last good version, that serves instead.
	good := Evaluate(evalInput("sp", policyDoc("ALLOW")))
	checkStatuses(t, good, []wantStatus{{kind: KindSecurityPolicy, name: "guard", state: StateAccepted, reason: ReasonTargetNotFound,
		conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=False/" + ReasonTargetNotFound}}})
	in := evalInput("sp", policyDoc("MAYBE"))
	in.LastGood = good.Set
	r = Evaluate(in)
	if sp := r.Set.SecurityPolicies[0]; sp.FailClosed() || sp.Spec.Rules[0].Action != ActionAllow {
		t.Errorf("served %+v, want the last good policy", sp.Spec)
	}
	checkStatuses(t, r, []wantStatus{{kind: KindSecurityPolicy, name: "guard", state: StateLastGood, reason: "Invalid"}})
	// The fail-closed policy is never a last good version.
	closed := Evaluate(evalInput("sp", policyDoc("MAYBE")))
	in.LastGood = closed.Set
	if sp := Evaluate(in).Set.SecurityPolicies[0]; !sp.FailClosed() {
		t.Errorf("a fail-closed policy served as a last good version")
	}
}

// TestCacheEvaluate checks that a Cache evaluates as Evaluate does.
func TestCacheEvaluate(t *testing.T) {
	t.Parallel()
	c := NewCache()
	in := evalInput("a", evalRoute("a", "nowhere", ""), "b", evalRoute("b", "orders", "    filters:\n    - type: Nope\n"))
	for range 2 {
		got, want := c.Evaluate(in), Evaluate(in)
		if got.Errors.Error() != want.Errors.Error() || !slices.Equal(routeNames(got.Set), routeNames(want.Set)) || len(got.Statuses) != len(want.Statuses) {
			t.Fatalf("cache: %v %v; want %v %v", got.Errors, routeNames(got.Set), want.Errors, routeNames(want.Set))
		}
		for i := range got.Statuses {
			if g, w := got.Statuses[i], want.Statuses[i]; g.State != w.State || g.Reason != w.Reason || !slices.Equal(g.Problems, w.Problems) {
				t.Errorf("status %d: %+v, want %+v", i, g, w)
			}
		}
	}
}

// TestGatewayAPISurface checks v1beta1 documents and GatewayClasses.
func TestGatewayAPISurface(t *testing.T) {
	t.Parallel()
	class := func(name, controller string) string {
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: GatewayClass\nmetadata: {name: %s, namespace: ignored}\nspec:\n  controllerName: %s\n", name, controller)
	}
	gateway := func(name, class string, port int) string {
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: Gateway\nmetadata: {name: %s}\nspec:\n  gatewayClassName: %s\n  listeners:\n  - {name: https, port: %d, protocol: HTTPS}\n", name, class, port)
	}
	in := Input{Files: []File{
		{Name: "classes.yaml", Data: []byte(class("meshgate", ControllerName) + "---\n" + class("envoy", "gateway.envoyproxy.io/gatewayclass-controller"))},
		// Another controller's Gateway may use what meshgate does not
		// support (HTTPS): not meshgate's problem.
		{Name: "envoy.yaml", Data: []byte(gateway("eg", "envoy", 8443))},
		{Name: "ours.yaml", Data: []byte(strings.Replace(strings.Replace(gateway("edge", "meshgate", 8080), "HTTPS", "HTTP", 1), "name: https", "name: http", 1))},
		{Name: "undefined.yaml", Data: []byte(strings.Replace(strings.Replace(gateway("other", "nowhere", 9090), "HTTPS", "HTTP", 1), "name: https", "name: http", 1))},
		{Name: "services.yaml", Data: []byte(evalServices)},
		{Name: "route.yaml", Data: []byte(strings.Replace(strings.Replace(evalRoute("r", "orders", ""), "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1", 1),
			"  - name: edge\n", "  - name: edge\n  - name: eg\n", 1))},
	}}
	r := Evaluate(in)
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0].Error(), `envoy.yaml:5: spec.gatewayClassName: gateway "eg" is not served by meshgate: its GatewayClass "envoy" has controllerName "gateway.envoyproxy.io/gatewayclass-controller"`) {
		t.Errorf("warnings %v", r.Warnings)
	}
	var served []string
	for _, g := range r.Set.Gateways {
		served = append(served, g.Name)
	}
	if !slices.Equal(served, []string{"edge", "other"}) || len(r.Set.GatewayClasses) != 2 || r.Set.GatewayClasses[1].Namespace != "" {
		t.Errorf("served gateways %v, classes %d", served, len(r.Set.GatewayClasses))
	}
	checkStatuses(t, r, []wantStatus{
		{kind: KindGatewayClass, name: "meshgate", state: StateAccepted, conditions: []string{"Accepted=True/Accepted"}},
		{kind: KindGatewayClass, name: "envoy", state: StateIgnored, reason: ReasonOtherController, conditions: []string{"Accepted=Unknown/OtherController"}},
		{kind: KindGateway, name: "eg", state: StateIgnored, reason: ReasonOtherController, message: "not served by meshgate"},
		{kind: KindGateway, name: "other", state: StateAccepted},
		{kind: KindHTTPRoute, name: "r", state: StateAccepted, reason: "NoMatchingParent", conditions: []string{"Accepted=True/Accepted", "Accepted=False/NoMatchingParent"},
			message: `gateway "eg" is not served by meshgate`},
	})
	if s := findStatus(r, KindHTTPRoute, "r"); s.Object.APIVersion != GatewayAPIVersion {
		t.Errorf("apiVersion %s", s.Object.APIVersion)
	}

	bad := Evaluate(Input{Files: []File{{Name: "c.yaml", Data: []byte(class("x", "") + "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n")}}})
	if got := bad.Errors.Error(); !strings.Contains(got, "c.yaml:5: spec.controllerName: controllerName is required") ||
		!strings.Contains(got, `c.yaml:7: apiVersion: kind Gateway needs apiVersion gateway.networking.k8s.io/v1, not "gateway.networking.k8s.io/v1alpha2"`) {
		t.Errorf("errors: %s", got)
	}
}

// TestCoreGroupWarning: group: core on a Service reference is read as the
// core group, with a warning.
func TestCoreGroupWarning(t *testing.T) {
	t.Parallel()
	route := strings.Replace(evalRoute("mesh", "orders", ""), "  - name: edge\n", "  - name: orders\n    group: core\n    kind: Service\n    port: 8080\n", 1)
	route = strings.Replace(route, "    - name: orders\n", "    - name: orders\n      group: core\n      kind: Service\n", 1)
	r := Evaluate(evalInput("mesh", route))
	if len(r.Errors) != 0 || len(r.Set.HTTPRoutes) != 1 {
		t.Fatalf("errors %v", r.Errors)
	}
	want := []string{
		`mesh.yaml:8: spec.parentRefs[0].group: group "core" is not the name of the core API group (it is ""): read as "" for this Service`,
		`mesh.yaml:14: spec.rules[0].backendRefs[0].group: group "core" is not the name of the core API group (it is ""): read as "" for this Service`,
	}
	if got := strings.Split(r.Warnings.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkStatuses(t, r, []wantStatus{{kind: KindHTTPRoute, name: "mesh", state: StateAccepted, conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"}}})
	if set, warnings, err := LoadWithWarnings(); err != nil || set == nil || len(warnings) != 0 {
		t.Errorf("LoadWithWarnings of nothing: %v %v", warnings, err)
	}
}

// TestReferenceGrant: a backendRef of a Gateway-bound route to another
// namespace needs a ReferenceGrant there; without one it does not resolve
// (RefNotPermitted). A mesh route needs none.
func TestReferenceGrant(t *testing.T) {
	t.Parallel()
	route := strings.Replace(strings.Replace(evalRoute("cross", "orders", ""), "  name: cross\n", "  name: cross\n  namespace: shop\n", 1),
		"    - name: orders\n", "    - name: orders\n      namespace: default\n", 1)
	shopGateway := strings.Replace(strings.Replace(evalGateway, "  name: edge\n", "  name: edge\n  namespace: shop\n", 1), "port: 8080", "port: 9091", 1)
	meshRoute := strings.Replace(route, "  - name: edge\n", "  - name: orders\n    kind: Service\n    namespace: default\n", 1)
	if r := Evaluate(evalInput("cross", meshRoute)); len(r.Errors) != 0 || r.Set.HTTPRoutes[0].GatewayBound() {
		t.Errorf("a mesh route to another namespace: %v", r.Errors)
	}
	grant := func(name, to string) string {
		return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: %s, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [%s]
`, name, to)
	}
	tests := []struct {
		name, grant string
		permitted   bool
	}{
		{"no grant", "", false},
		{"a grant to every Service", grant("all", `{group: "", kind: Service}`), true},
		{"a grant to that Service", grant("one", `{group: "", kind: Service, name: orders}`), true},
		{"a grant to another Service", grant("other", `{group: "", kind: Service, name: users}`), false},
		{"a grant from another namespace", strings.Replace(grant("ns", `{group: "", kind: Service}`), "namespace: shop", "namespace: web", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := evalInput("cross", route, "shop-gateway", shopGateway)
			if tt.grant != "" {
				in = evalInput("cross", route, "shop-gateway", shopGateway, "grant", tt.grant)
			}
			r := Evaluate(in)
			if got := r.Set.BackendPermitted("shop", "default", "orders"); got != tt.permitted {
				t.Errorf("BackendPermitted = %v, want %v", got, tt.permitted)
			}
			if tt.permitted {
				if len(r.Errors) != 0 {
					t.Errorf("errors: %v", r.Errors)
				}
				checkStatuses(t, r, []wantStatus{{kind: KindHTTPRoute, name: "cross", state: StateAccepted, conditions: []string{"ResolvedRefs=True/ResolvedRefs"}}})
				return
			}
			checkStatuses(t, r, []wantStatus{{kind: KindHTTPRoute, name: "cross", state: StateAccepted, reason: "RefNotPermitted",
				conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted"},
				message:    `cross.yaml:12: spec.rules[0].backendRefs[0].namespace: service "default/orders" is in another namespace: it needs a ReferenceGrant in namespace "default" from HTTPRoutes of namespace "shop" to it`}})
		})
	}
	bad := Evaluate(evalInput("grant", "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: g}\nspec:\n  from: [{group: x, kind: \"\", namespace: Bad}]\n  to: []\n"))
	checkStatuses(t, bad, []wantStatus{{kind: KindReferenceGrant, name: "g", state: StateRejected, reason: "Invalid", message: "grant.yaml:6: spec.to: at least one to is required"}})
	if len(bad.Errors) != 3 {
		t.Errorf("errors: %v", bad.Errors)
	}
}

// TestAllowedRoutesSelector: a listener selecting namespaces by label
// admits the routes of the namespaces whose Namespace document has the
// labels (and every namespace by kubernetes.io/metadata.name).
func TestAllowedRoutesSelector(t *testing.T) {
	t.Parallel()
	gateway := strings.Replace(evalGateway, `    hostname: "*.example.com"
`, `    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {shared-gateway-access: "true"}
  - name: by-name
    port: 8081
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions:
          - {key: kubernetes.io/metadata.name, operator: In, values: [web]}
`, 1)
	namespaces := `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {shared-gateway-access: "true"}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
`
	route := func(name, ns string) string {
		r := strings.Replace(evalRoute(name, "orders", ""), "  name: "+name+"\n", "  name: "+name+"\n  namespace: "+ns+"\n", 1)
		r = strings.Replace(r, "  - name: edge\n", "  - name: edge\n    namespace: default\n", 1)
		return strings.Replace(r, "    - name: orders\n", "    - name: orders\n      namespace: "+ns+"\n", 1)
	}
	services := func(ns string) string {
		return strings.Replace(strings.Split(evalServices, "---")[0], "  name: orders\n", "  name: orders\n  namespace: "+ns+"\n", 1)
	}
	in := Input{Files: []File{{Name: "gateway.yaml", Data: []byte(gateway)}, {Name: "ns.yaml", Data: []byte(namespaces)},
		{Name: "svc.yaml", Data: []byte(services("shop") + "---\n" + services("other") + "---\n" + services("web"))},
		{Name: "shop.yaml", Data: []byte(route("r", "shop"))}, {Name: "other.yaml", Data: []byte(route("r", "other"))}, {Name: "web.yaml", Data: []byte(route("r", "web"))}}}
	r := Evaluate(in)
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Error(), `other.yaml:8: spec.parentRefs[0]: gateway "default/edge" does not accept routes from namespace "other" (allowedRoutes.namespaces.from is Selector)`) {
		t.Errorf("errors: %v", r.Errors)
	}
	ls := findStatus(r, KindGateway, "edge").Object.Status.Listeners
	if ls[0].AttachedRoutes != 1 || ls[1].AttachedRoutes != 1 {
		t.Errorf("attachedRoutes %d, %d; want 1 (shop), 1 (web)", ls[0].AttachedRoutes, ls[1].AttachedRoutes)
	}
	for _, s := range r.Statuses {
		if s.Kind == KindHTTPRoute && s.Namespace == "other" && s.Reason != "NotAllowedByListeners" {
			t.Errorf("other/r: %s %s", s.State, s.Reason)
		}
	}
	if ns := findStatus(r, KindNamespace, "shop"); ns == nil || ns.State != StateAccepted || ns.Namespace != "" {
		t.Errorf("namespace status %+v", ns)
	}
	if got := r.Set.NamespaceLabels("web"); len(got) != 1 || got["kubernetes.io/metadata.name"] != "web" {
		t.Errorf("labels of web: %v", got)
	}
}

// TestServiceParentSectionName: a Service parent's sectionName names one of
// its ports (GAMMA); one it lacks leaves that parent unattached.
func TestServiceParentSectionName(t *testing.T) {
	t.Parallel()
	svc := "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: multi}\nspec:\n  ports: [{name: http, port: 80}, {name: admin, port: 9090}]\n"
	route := func(parent string) string {
		return "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [" + parent + "]\n  rules: [{backendRefs: [{name: multi, port: 80}]}]\n"
	}
	for _, tt := range []struct {
		parent, reason, message string
	}{
		{"{kind: Service, name: multi, sectionName: admin}", "", ""},
		{"{kind: Service, name: multi, sectionName: admin, port: 9090}", "", ""},
		{"{kind: Service, name: multi, sectionName: grpc}", "NoMatchingParent", `r.yaml:5: spec.parentRefs[0].sectionName: service "multi" has no port named "grpc"`},
		{"{kind: Service, name: multi, sectionName: admin, port: 80}", "NoMatchingParent", `r.yaml:5: spec.parentRefs[0].sectionName: port "admin" of service "multi" is not port 80`},
	} {
		r := Evaluate(Input{Files: []File{{Name: "s.yaml", Data: []byte(svc)}, {Name: "r.yaml", Data: []byte(route(tt.parent))}}})
		want := wantStatus{kind: KindHTTPRoute, name: "r", state: StateAccepted, reason: tt.reason, message: tt.message, conditions: []string{"Accepted=True/Accepted"}}
		if tt.reason != "" {
			want.conditions = []string{"Accepted=False/NoMatchingParent"}
		}
		checkStatuses(t, r, []wantStatus{want})
		if (len(r.Errors) > 0) != (tt.reason != "") {
			t.Errorf("%s: errors %v", tt.parent, r.Errors)
		}
	}
}
