package controlplane

import (
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

const secondRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: orders, port: 80}]
`

// summaryOf loads files (name, content pairs) as the control plane does and
// summarizes them.
func summaryOf(t *testing.T, files ...string) *policySummary {
	t.Helper()
	var in policyInput
	for i := 0; i < len(files); i += 2 {
		in.files = append(in.files, policy.File{Name: files[i], Data: []byte(files[i+1])})
	}
	in.version = model.PolicyVersion(in.files)
	set, err := policy.LoadFiles(in.files...)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	m, err := model.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	return summarize(in, set, m)
}

func TestDestructiveChange(t *testing.T) {
	t.Parallel()
	services := edgeGateway + "---\n" + strings.ReplaceAll(serviceYAML, "%s", "orders")
	prev := summaryOf(t, "services.yaml", services, "routes.yaml", edgeRouteToOrders+"---\n"+secondRoute)
	tests := []struct {
		name string
		next *policySummary
		// want: substrings of the reason; none: not destructive.
		want []string
	}{
		{name: "the same policy", next: prev},
		{name: "a comment added", next: summaryOf(t, "services.yaml", "# edited\n"+services, "routes.yaml", edgeRouteToOrders+"---\n"+secondRoute)},
		{name: "one of two routes removed", next: summaryOf(t, "services.yaml", services, "routes.yaml", secondRoute)},
		{name: "a file of routes removed: the gateway loses every route",
			next: summaryOf(t, "services.yaml", services),
			want: []string{"Gateway default/edge loses every route (it had 2 rules)"}},
		{name: "a file truncated",
			next: summaryOf(t, "services.yaml", services, "routes.yaml", ""),
			want: []string{"policy file routes.yaml holds no document any more (it held 2)", "Gateway default/edge loses every route"}},
		{name: "a file left with comments only",
			next: summaryOf(t, "services.yaml", services, "routes.yaml", "# nothing here\n---\n"),
			want: []string{"policy file routes.yaml holds no document any more"}},
		{name: "every file emptied",
			next: summaryOf(t, "services.yaml", "", "routes.yaml", ""),
			want: []string{"policy file services.yaml", "policy file routes.yaml", "no policy document is left (there were 4)", "Gateway default/edge"}},
		{name: "every KV entry gone", next: summaryOf(t),
			want: []string{"no policy document is left (there were 4)", "Gateway default/edge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := destructiveChange(prev, tt.next)
			if len(tt.want) == 0 && got != "" {
				t.Errorf("destructive: %s", got)
			}
			if len(tt.want) > 0 && got == "" {
				t.Errorf("not destructive, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("reason %q does not say %q", got, w)
				}
			}
		})
	}
}

// TestDestructiveHoldDecide: a destructive change is applied once the same
// policy has been seen for the whole window; another policy meanwhile
// starts the window again.
func TestDestructiveHoldDecide(t *testing.T) {
	t.Parallel()
	const window = 5 * time.Second
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at      time.Duration // since t0
		version string
		apply   bool
		started bool
		wait    time.Duration
	}
	steps := []step{
		{at: 0, version: "a", started: true, wait: window},
		{at: 2 * time.Second, version: "a", wait: 3 * time.Second},
		{at: 3 * time.Second, version: "b", started: true, wait: window}, // edited again: the window starts over
		{at: 7 * time.Second, version: "b", wait: time.Second},
		{at: 8 * time.Second, version: "b", apply: true},
		{at: 9 * time.Second, version: "b", started: true, wait: window}, // applied: a new hold if it is destructive again
	}
	var h destructiveHold
	for i, s := range steps {
		apply, started, wait := h.decide(s.version, "reason", t0.Add(s.at), window)
		if apply != s.apply || started != s.started || wait != s.wait {
			t.Errorf("step %d (%s at %s): apply %v, started %v, wait %s; want %v, %v, %s", i, s.version, s.at, apply, started, wait, s.apply, s.started, s.wait)
		}
		if h.active() == apply {
			t.Errorf("step %d: active %v after apply %v", i, h.active(), apply)
		}
	}
}
