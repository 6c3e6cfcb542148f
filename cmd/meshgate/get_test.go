package main

import (
	"strings"
	"testing"

	"github.com/meshgate/meshgate/controlplane/kvpolicy"
	"github.com/meshgate/meshgate/policy"
)

// evaluated is the statuses of a policy with one valid and one invalid
// route.
func evaluated(t *testing.T) []policy.ResourceStatus {
	t.Helper()
	gw := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge}\nspec:\n  gatewayClassName: meshgate\n  listeners: [{name: http, port: 8080, protocol: HTTP}]\n"
	route := func(name, filter string) string {
		return "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: " + name + "}\nspec:\n  parentRefs: [{name: edge}]\n  rules:\n  - filters: [{type: " + filter + "}]\n"
	}
	r := policy.Evaluate(policy.Input{Files: []policy.File{{Name: "gw.yaml", Data: []byte(gw)},
		{Name: "good.yaml", Data: []byte(strings.Replace(route("good", "X"), "  - filters: [{type: X}]\n", "  - {}\n", 1))},
		{Name: "bad.yaml", Data: []byte(route("bad", "Nope"))}}})
	return r.Statuses
}

func TestPrintResourceStatuses(t *testing.T) {
	t.Parallel()
	items := evaluated(t)
	tests := []struct {
		output string
		want   []string
	}{
		{"", []string{"KIND NAMESPACE NAME STATUS FILE", "HTTPRoute default bad Rejected: UnsupportedValue bad.yaml:1", "HTTPRoute default good Accepted good.yaml:1", "Gateway default edge Accepted gw.yaml:1"}},
		{"yaml", []string{"# bad.yaml:1 (Rejected: UnsupportedValue)", "apiVersion: gateway.networking.k8s.io/v1", "kind: HTTPRoute",
			"status: parents: - conditions: - lastTransitionTime:", `message: 'bad.yaml:7: spec.rules[0].filters[0].type: unknown filter type "Nope"'`,
			`observedGeneration: 1 reason: UnsupportedValue status: "False" type: Accepted controllerName: meshgate.dev/controller parentRef: group: gateway.networking.k8s.io kind: Gateway name: edge`,
			"status: addresses: - type: IPAddress value: 127.0.0.1",
			"listeners: - attachedRoutes: 1"}},
		{"json", []string{`"items": [`, `"reason": "UnsupportedValue"`}},
	}
	for _, tt := range tests {
		var b strings.Builder
		if err := printResourceStatuses(&b, items, tt.output, false); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(strings.Fields(b.String()), " ")
		for _, w := range tt.want {
			if w = strings.Join(strings.Fields(w), " "); !strings.Contains(got, w) {
				t.Errorf("-o %q: output lacks %q:\n%s", tt.output, w, b.String())
			}
		}
	}
}

func TestPrintResourceProblems(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := printResourceProblems(&b, evaluated(t)); err != nil {
		t.Fatal(err)
	}
	want := "resources not accepted, or with references or parents that do not resolve (1):\n" +
		"  HTTPRoute default/bad: Rejected: UnsupportedValue (bad.yaml:1)\n" +
		"    bad.yaml:7: spec.rules[0].filters[0].type: unknown filter type \"Nope\"\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestPrintResourcesWithStates: with the control plane's states, the KV
// table gains a STATUS column.
func TestPrintResourcesWithStates(t *testing.T) {
	t.Parallel()
	resources := []kvpolicy.Resource{{Kind: "HTTPRoute", Namespace: "default", Name: "a", ModifyIndex: 7},
		{Kind: "GatewayClass", Namespace: "default", Name: "meshgate", ModifyIndex: 8}, {Kind: "HTTPRoute", Namespace: "default", Name: "new", ModifyIndex: 9}}
	states := map[string]string{stateKey("HTTPRoute", "default", "a"): "LastGood: UnsupportedValue", stateKey("GatewayClass", "", "meshgate"): "Accepted"}
	var b strings.Builder
	if err := printResources(&b, resources, "", false, states); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(b.String()), " ")
	want := "KIND NAMESPACE NAME MODIFY-INDEX STATUS HTTPRoute default a 7 LastGood: UnsupportedValue GatewayClass default meshgate 8 Accepted HTTPRoute default new 9 -"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
