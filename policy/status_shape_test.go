package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// allConditions lists every condition of a status block: top level, per
// listener and per parent.
func allConditions(st StatusBlock) []metav1.Condition {
	out := slices.Clone(st.Conditions)
	for _, l := range st.Listeners {
		out = append(out, l.Conditions...)
	}
	for _, p := range st.Parents {
		out = append(out, p.Conditions...)
	}
	return out
}

// TestStatusObservedGeneration: every condition carries the generation of
// the document it is about: its metadata.generation, or 1.
func TestStatusObservedGeneration(t *testing.T) {
	t.Parallel()
	withGeneration := strings.Replace(evalRoute("gen", "orders", ""), "  name: gen\n", "  name: gen\n  generation: 7\n", 1)
	ignored := "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  name: other\n  generation: 3\nspec:\n  controllerName: example.com/other\n"
	r := Evaluate(evalInput("gen", withGeneration, "plain", evalRoute("plain", "nowhere", ""), "other", ignored))
	for _, tc := range []struct {
		kind, name string
		want       int64
	}{
		{KindHTTPRoute, "gen", 7},
		{KindHTTPRoute, "plain", 1},
		{KindGateway, "edge", 1},
		{KindService, "orders", 1},
		{KindGatewayClass, "other", 3},
	} {
		s := findStatus(r, tc.kind, tc.name)
		if s == nil {
			t.Fatalf("no status of %s %s", tc.kind, tc.name)
		}
		conds := allConditions(s.Object.Status)
		if len(conds) == 0 {
			t.Errorf("%s %s: no conditions", tc.kind, tc.name)
		}
		for _, c := range conds {
			if c.ObservedGeneration != tc.want {
				t.Errorf("%s %s: condition %s has observedGeneration %d, want %d", tc.kind, tc.name, c.Type, c.ObservedGeneration, tc.want)
			}
		}
		if s.Object.Metadata.Generation != tc.want {
			t.Errorf("%s %s: metadata.generation %d, want %d", tc.kind, tc.name, s.Object.Metadata.Generation, tc.want)
		}
	}

	bad := Evaluate(evalInput("neg", strings.Replace(evalRoute("neg", "orders", ""), "  name: neg\n", "  name: neg\n  generation: -2\n", 1)))
	if len(bad.Errors) != 1 || !strings.Contains(bad.Errors[0].Error(), "neg.yaml:5: metadata.generation: generation -2 is negative") {
		t.Errorf("negative generation: errors %v", bad.Errors)
	}
}

// TestStatusParentRefDefaults: route status carries its parentRefs as the
// CRDs store them: group and kind filled, the core group for Services.
func TestStatusParentRefDefaults(t *testing.T) {
	t.Parallel()
	route := strings.Replace(evalRoute("both", "orders", ""), "  - name: edge\n",
		"  - name: edge\n  - name: orders\n    kind: Service\n    port: 8080\n", 1)
	r := Evaluate(evalInput("both", route))
	s := findStatus(r, KindHTTPRoute, "both")
	if s == nil || len(s.Object.Status.Parents) != 2 {
		t.Fatalf("status %+v", s)
	}
	for i, want := range []string{"gateway.networking.k8s.io/Gateway edge", "/Service orders"} {
		p := s.Object.Status.Parents[i]
		if p.ParentRef.Group == nil || p.ParentRef.Kind == nil {
			t.Fatalf("parents[%d].parentRef without group or kind: %+v", i, p.ParentRef)
		}
		if got := fmt.Sprintf("%s/%s %s", *p.ParentRef.Group, *p.ParentRef.Kind, p.ParentRef.Name); got != want {
			t.Errorf("parents[%d].parentRef = %s, want %s", i, got, want)
		}
		if p.ControllerName != ControllerName {
			t.Errorf("parents[%d].controllerName = %q", i, p.ControllerName)
		}
	}
	// The spec as written is shown unchanged.
	if spec := s.Object.Spec.(gwapiv1.HTTPRouteSpec); spec.ParentRefs[0].Group != nil || spec.ParentRefs[1].Group != nil {
		t.Errorf("the spec's parentRefs were changed: %+v", spec.ParentRefs)
	}
}

// gatewayWithAddresses is the evaluation Gateway with these
// spec.addresses entries (YAML list items).
func gatewayWithAddresses(items ...string) Input {
	in := evalInput()
	in.Files[0].Data = []byte(strings.Replace(evalGateway, "  listeners:\n",
		"  addresses:\n"+strings.Join(items, "")+"  listeners:\n", 1))
	return in
}

// TestGatewayAddresses: several IP addresses are accepted and shown in
// status.addresses; other address types are not (UnsupportedAddress).
func TestGatewayAddresses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		in        Input
		state     string
		reason    string
		addresses []string // status.addresses
		err       string
	}{{
		name: "none: the default address", in: evalInput(), state: StateAccepted,
		addresses: []string{"127.0.0.1"},
	}, {
		name:  "two IP addresses",
		in:    gatewayWithAddresses("  - value: 127.0.0.1\n", "  - type: IPAddress\n    value: \"::1\"\n"),
		state: StateAccepted, addresses: []string{"127.0.0.1", "::1"},
	}, {
		name:  "a Hostname address",
		in:    gatewayWithAddresses("  - value: 127.0.0.1\n", "  - type: Hostname\n    value: lb.example.com\n"),
		state: StateRejected, reason: "UnsupportedAddress",
		err: `gateway.yaml:9: spec.addresses[1].type: address type "Hostname" is not supported`,
	}, {
		name:  "the same address twice",
		in:    gatewayWithAddresses("  - value: 127.0.0.1\n", "  - value: 127.0.0.01\n"),
		state: StateRejected, reason: "Invalid",
		err: `spec.addresses[1].value: "127.0.0.01" is not a valid IP address`,
	}, {
		name:  "a repeated address",
		in:    gatewayWithAddresses("  - value: \"::1\"\n", "  - value: \"0:0::1\"\n"),
		state: StateRejected, reason: "Invalid",
		err: `gateway.yaml:9: spec.addresses[1].value: address ::1 is already spec.addresses[0]`,
	}, {
		name:  "0.0.0.0 with another",
		in:    gatewayWithAddresses("  - value: 0.0.0.0\n", "  - value: 127.0.0.2\n"),
		state: StateRejected, reason: "Invalid",
		err: `gateway.yaml:8: spec.addresses[0].value: 0.0.0.0 binds every address of the host`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := Evaluate(tc.in)
			s := findStatus(r, KindGateway, "edge")
			if s == nil {
				t.Fatal("no status of the Gateway")
			}
			if s.State != tc.state || s.Reason != tc.reason {
				t.Errorf("state %s reason %q, want %s %q (problems %q)", s.State, s.Reason, tc.state, tc.reason, s.Problems)
			}
			var got []string
			for _, a := range s.Object.Status.Addresses {
				if a.Type == nil || *a.Type != gwapiv1.IPAddressType {
					t.Errorf("status address %+v: type is not IPAddress", a)
				}
				got = append(got, a.Value)
			}
			if !slices.Equal(got, tc.addresses) {
				t.Errorf("status.addresses = %q, want %q", got, tc.addresses)
			}
			if tc.err != "" && !slices.ContainsFunc(r.Errors, func(e *Error) bool { return strings.Contains(e.Error(), tc.err) }) {
				t.Errorf("errors %v, want one with %q", r.Errors, tc.err)
			}
			if tc.reason == "UnsupportedAddress" {
				conds, _ := conditionStrings(s.Object.Status)
				if !slices.Contains(conds, "Accepted=False/UnsupportedAddress") {
					t.Errorf("conditions %v", conds)
				}
			}
		})
	}
}

// TestGatewayAddressesBindConflicts: two Gateways conflict on a port when
// any of their addresses meet.
func TestGatewayAddressesBindConflicts(t *testing.T) {
	t.Parallel()
	in := gatewayWithAddresses("  - value: 127.0.0.1\n", "  - value: 127.0.0.2\n")
	second := strings.Replace(strings.Replace(evalGateway, "name: edge", "name: second", 1), "  listeners:\n",
		"  addresses:\n  - value: 127.0.0.3\n  - value: 127.0.0.2\n  listeners:\n", 1)
	in.Files = append(in.Files, File{Name: "second.yaml", Data: []byte(second)})
	r := Evaluate(in)
	if !slices.ContainsFunc(r.Errors, func(e *Error) bool {
		return strings.Contains(e.Error(), `second.yaml:12: spec.listeners[0].port: Gateway "default/second" listener "http" binds 127.0.0.2:8080, already bound by Gateway "default/edge"`)
	}) {
		t.Errorf("errors %v", r.Errors)
	}
}

// TestServiceImportParent: a parentRef to a ServiceImport is not attached,
// with a message saying why; the route's other parents are.
func TestServiceImportParent(t *testing.T) {
	t.Parallel()
	route := strings.Replace(evalRoute("mc", "orders", ""), "  - name: edge\n",
		"  - name: edge\n  - name: orders\n    group: multicluster.x-k8s.io\n    kind: ServiceImport\n", 1)
	r := Evaluate(evalInput("mc", route))
	s := findStatus(r, KindHTTPRoute, "mc")
	if s == nil || s.State != StateAccepted || len(s.Object.Status.Parents) != 2 {
		t.Fatalf("status %+v", s)
	}
	c := s.Object.Status.Parents[1].Conditions[0]
	if c.Type != "Accepted" || c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedValue" ||
		!strings.Contains(c.Message, "multi-cluster services are not part of meshgate") {
		t.Errorf("parents[1] Accepted = %+v", c)
	}
	if c := s.Object.Status.Parents[0].Conditions[0]; c.Status != metav1.ConditionTrue {
		t.Errorf("parents[0] Accepted = %+v", c)
	}
}
