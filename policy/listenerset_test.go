package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// lsGateway is the Gateway edge (namespace default) with allowedListeners
// (YAML under spec.allowedListeners, or none when "") and one listener,
// http on 8080 for *.example.com.
func lsGateway(allowed string) string {
	g := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  gatewayClassName: meshgate
`
	if allowed != "" {
		g += "  allowedListeners:\n" + allowed
	}
	return g + `  listeners:
  - name: http
    port: 8080
    protocol: HTTP
    hostname: "*.example.com"
`
}

// lsSet is a ListenerSet name in namespace ns whose parent is edge, with
// the listeners (YAML list items under spec.listeners).
func lsSet(name, ns, listeners string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata:
  name: %s
  namespace: %s
spec:
  parentRef:
    name: edge
    namespace: default
  listeners:
%s`, name, ns, listeners)
}

// lsListener is one ListenerSet listener item.
func lsListener(name string, port int, protocol, hostname string) string {
	l := fmt.Sprintf("  - name: %s\n    port: %d\n    protocol: %s\n", name, port, protocol)
	if hostname != "" {
		l += "    hostname: " + hostname + "\n"
	}
	return l
}

// lsRoute is an HTTPRoute r in namespace default to orders whose parent is
// the ListenerSet set in namespace ns (section: its sectionName, or "").
func lsRoute(name, set, ns, section string) string {
	ref := fmt.Sprintf("  - group: gateway.networking.k8s.io\n    kind: ListenerSet\n    name: %s\n    namespace: %s\n", set, ns)
	if section != "" {
		ref += "    sectionName: " + section + "\n"
	}
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: %s
spec:
  parentRefs:
%s  rules:
  - backendRefs:
    - name: orders
      port: 8080
`, name, ref)
}

const lsNamespaces = `apiVersion: v1
kind: Namespace
metadata:
  name: team
  labels: {shared: "yes"}
`

// servedListeners lists the ListenerSets of a set with their listeners:
// "ns/name:listener,listener".
func servedListeners(s *Set) []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, ls := range s.ListenerSets {
		var names []string
		for _, l := range ls.Spec.Listeners {
			names = append(names, string(l.Name))
		}
		out = append(out, ls.Namespace+"/"+ls.Name+":"+strings.Join(names, ","))
	}
	return out
}

// TestListenerSets checks, case by case, which ListenerSets (and which of
// their listeners) a Gateway serves, the errors named by file, line and
// field, and the statuses.
func TestListenerSets(t *testing.T) {
	t.Parallel()
	sameNS := "    namespaces:\n      from: Same\n"
	all := "    namespaces:\n      from: All\n"
	selector := "    namespaces:\n      from: Selector\n      selector:\n        matchLabels: {shared: \"yes\"}\n"
	for _, tt := range []struct {
		name string
		// files: name, content pairs besides gateway.yaml (the gateway
		// given) and services.yaml.
		gateway string
		files   []string
		// errors: each a substring of one error, in order.
		errors []string
		served []string
		want   []wantStatus
		// routes: attachedRoutes per listener of the ListenerSet a.
		attached []int32
	}{{
		name:    "allowed by default: no",
		gateway: lsGateway(""),
		files:   []string{"ls", lsSet("a", "default", lsListener("extra", 9090, "HTTP", ""))},
		errors:  []string{`ls.yaml:7: spec.parentRef: gateway "edge" does not allow ListenerSets from namespace "default" (its allowedListeners.namespaces.from is None; see gateway.yaml:5)`},
		want: []wantStatus{{kind: KindListenerSet, name: "a", state: StateRejected, reason: "NotAllowed",
			conditions: []string{"Accepted=False/NotAllowed", "Programmed=False/NotAllowed"}}},
	}, {
		name:    "Same admits its namespace only",
		gateway: lsGateway(sameNS),
		files: []string{"ls", lsSet("a", "default", lsListener("extra", 9090, "HTTP", "")) + "---\n" + lsSet("b", "team", lsListener("extra", 9091, "HTTP", "")),
			"route", lsRoute("r", "a", "default", "")},
		errors: []string{`ls.yaml:21: spec.parentRef: gateway "default/edge" does not allow ListenerSets from namespace "team" (its allowedListeners.namespaces.from is Same`},
		served: []string{"default/a:extra"},
		want: []wantStatus{
			{kind: KindListenerSet, name: "a", state: StateAccepted, conditions: []string{"Accepted=True/Accepted", "Programmed=True/Programmed", "Conflicted=False/NoConflicts"}},
			{kind: KindListenerSet, name: "b", state: StateRejected, reason: "NotAllowed"},
			{kind: KindHTTPRoute, name: "r", state: StateAccepted, conditions: []string{"Accepted=True/Accepted"}},
		},
		attached: []int32{1},
	}, {
		name:    "Selector by the Namespace document's labels",
		gateway: lsGateway(selector),
		files:   []string{"ns", lsNamespaces, "ls", lsSet("a", "team", lsListener("one", 9090, "HTTP", "")+lsListener("two", 9091, "HTTP", "")) + "---\n" + lsSet("b", "other", lsListener("x", 9092, "HTTP", ""))},
		errors:  []string{`ls.yaml:24: spec.parentRef: gateway "default/edge" does not allow ListenerSets from namespace "other" (its allowedListeners.namespaces.from is Selector`},
		served:  []string{"team/a:one,two"},
	}, {
		name:    "conflicts: the Gateway's listener wins, then the first ListenerSet",
		gateway: lsGateway(all),
		files: []string{"ls", lsSet("a", "default", lsListener("same-host", 8080, "HTTP", `"*.example.com"`)+lsListener("tcp", 8080, "TCP", "")+lsListener("ok", 8080, "HTTP", "a.test")) +
			"---\n" + lsSet("b", "default", lsListener("dup", 8080, "HTTP", "a.test")+lsListener("fine", 8081, "HTTP", ""))},
		errors: []string{
			`ls.yaml:11: spec.listeners[0]: listener "same-host" conflicts with listener "http" of gateway "default/edge": same port 8080 and hostname "*.example.com"`,
			`ls.yaml:15: spec.listeners[1]: listener "tcp" conflicts with listener "http" of gateway "default/edge": port 8080 is HTTP there, TCP here`,
			`ls.yaml:33: spec.listeners[0]: listener "dup" conflicts with listener "ok" of ListenerSet "default/a" (ls.yaml:18): same port 8080 and hostname "a.test"`,
		},
		served: []string{"default/a:ok", "default/b:fine"},
		want: []wantStatus{
			{kind: KindListenerSet, name: "a", state: StateAccepted, reason: "ListenersNotValid",
				conditions: []string{"Accepted=True/ListenersNotValid", "Accepted=False/HostnameConflict", "Conflicted=True/HostnameConflict", "Programmed=False/HostnameConflict",
					"Accepted=False/ProtocolConflict", "Conflicted=True/ProtocolConflict", "Programmed=False/ProtocolConflict", "Programmed=True/Programmed"}},
		},
	}, {
		name:    "every listener conflicts: rejected, ListenersNotValid",
		gateway: lsGateway(all),
		files:   []string{"ls", lsSet("a", "default", lsListener("same-host", 8080, "HTTP", `"*.example.com"`))},
		errors:  []string{`ls.yaml:11: spec.listeners[0]: listener "same-host" conflicts`},
		want: []wantStatus{{kind: KindListenerSet, name: "a", state: StateRejected, reason: "ListenersNotValid",
			conditions: []string{"Accepted=False/ListenersNotValid", "Programmed=False/ListenersNotValid"}}},
	}, {
		name:    "UDP is not supported yet: that listener only",
		gateway: lsGateway(all),
		files:   []string{"ls", lsSet("a", "default", lsListener("udp", 8443, "UDP", "")+lsListener("plain", 9090, "HTTP", ""))},
		errors:  []string{`ls.yaml:13: spec.listeners[0].protocol: protocol UDP is not supported yet (only HTTP, HTTPS, TCP and TLS)`},
		served:  []string{"default/a:plain"},
		want: []wantStatus{{kind: KindListenerSet, name: "a", state: StateAccepted, reason: "ListenersNotValid",
			conditions: []string{"Accepted=False/UnsupportedProtocol"}}},
	}, {
		name:    "bad fields, each by file, line and field",
		gateway: lsGateway("    namespaces:\n      from: Sometimes\n"),
		files: []string{"ls", strings.Replace(lsSet("a", "default", lsListener("Bad_Name", 0, "HTTP", "")+lsListener("x", 9090, "HTTP", "")+lsListener("x", 9091, "HTTP", "")),
			"    name: edge\n", "    kind: Service\n    name: edge\n", 1)},
		errors: []string{
			`gateway.yaml:9: spec.allowedListeners.namespaces.from: unknown value "Sometimes" (want None, Same, All or Selector)`,
			`ls.yaml:8: spec.parentRef.kind: parent kind "Service" is not supported (want Gateway)`,
			`ls.yaml:12: spec.listeners[0].name: invalid listener name "Bad_Name"`,
			`ls.yaml:13: spec.listeners[0].port: port 0 is out of range 1-65535`,
			`ls.yaml:18: spec.listeners[2].name: duplicate listener name "x" (also spec.listeners[1])`,
		},
		want: []wantStatus{{kind: KindListenerSet, name: "a", state: StateRejected, reason: "Invalid"}},
	}, {
		name:    "no such parent",
		gateway: lsGateway(all),
		files:   []string{"ls", strings.Replace(lsSet("a", "default", lsListener("x", 9090, "HTTP", "")), "    name: edge\n", "    name: edg\n", 1)},
		errors:  []string{`ls.yaml:8: spec.parentRef.name: gateway "edg" not found`},
		want:    []wantStatus{{kind: KindListenerSet, name: "a", state: StateRejected, reason: "ParentNotAccepted"}},
	}, {
		name:    "routes attach by sectionName; a missing section does not attach",
		gateway: lsGateway(all),
		files: []string{"ls", lsSet("a", "default", lsListener("one", 9090, "HTTP", "")+lsListener("two", 9091, "HTTP", "")),
			"route", lsRoute("r1", "a", "default", "one") + "---\n" + lsRoute("r2", "a", "default", "") + "---\n" + lsRoute("r3", "a", "default", "three") + "---\n" + lsRoute("r4", "nope", "default", "")},
		errors: []string{
			`route.yaml:42: spec.parentRefs[0].sectionName: ListenerSet "a" has no listener "three"`,
			`route.yaml:56: spec.parentRefs[0].name: ListenerSet "nope" not found`,
		},
		served:   []string{"default/a:one,two"},
		attached: []int32{2, 1},
		want: []wantStatus{
			{kind: KindHTTPRoute, name: "r3", state: StateAccepted, reason: "NoMatchingParent"},
			{kind: KindHTTPRoute, name: "r4", state: StateAccepted, reason: "NoMatchingParent"},
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := Input{Files: []File{{Name: "gateway.yaml", Data: []byte(tt.gateway)}, {Name: "services.yaml", Data: []byte(evalServices)}}}
			for i := 0; i+1 < len(tt.files); i += 2 {
				in.Files = append(in.Files, File{Name: tt.files[i] + ".yaml", Data: []byte(tt.files[i+1])})
			}
			r := Evaluate(in)
			if len(r.Errors) != len(tt.errors) {
				t.Errorf("%d errors, want %d:\n%v", len(r.Errors), len(tt.errors), r.Errors)
			}
			for i, want := range tt.errors {
				if i < len(r.Errors) && !strings.Contains(r.Errors[i].Error(), want) {
					t.Errorf("error %d:\n got %s\nwant %s", i, r.Errors[i], want)
				}
			}
			if r.Set == nil {
				t.Fatal("nothing served")
			}
			if got := servedListeners(r.Set); !slices.Equal(got, tt.served) {
				t.Errorf("served ListenerSets %q, want %q", got, tt.served)
			}
			checkStatuses(t, r, tt.want)
			if tt.attached != nil {
				st := findStatus(r, KindListenerSet, "a")
				var got []int32
				for _, l := range st.Object.Status.Listeners {
					got = append(got, l.AttachedRoutes)
				}
				if !slices.Equal(got, tt.attached) {
					t.Errorf("attachedRoutes %v, want %v", got, tt.attached)
				}
			}
		})
	}
}

// TestGatewayAttachedListenerSets: a Gateway that sets allowedListeners
// counts the ListenerSets attached to it; a route to the Gateway does not
// attach to a ListenerSet's listener.
func TestGatewayAttachedListenerSets(t *testing.T) {
	t.Parallel()
	in := Input{Files: []File{
		{Name: "gateway.yaml", Data: []byte(lsGateway("    namespaces:\n      from: Same\n"))},
		{Name: "services.yaml", Data: []byte(evalServices)},
		{Name: "ls.yaml", Data: []byte(lsSet("a", "default", lsListener("extra", 9090, "HTTP", "")) + "---\n" + lsSet("b", "default", lsListener("more", 9091, "HTTP", "")))},
		{Name: "route.yaml", Data: []byte(evalRoute("to-gateway", "orders", ""))},
	}}
	r := Evaluate(in)
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	gw := findStatus(r, KindGateway, "edge").Object.Status
	if gw.AttachedListenerSets == nil || *gw.AttachedListenerSets != 2 {
		t.Errorf("attachedListenerSets %v, want 2", gw.AttachedListenerSets)
	}
	if n := gw.Listeners[0].AttachedRoutes; n != 1 {
		t.Errorf("gateway listener attachedRoutes %d, want 1", n)
	}
	for _, l := range findStatus(r, KindListenerSet, "a").Object.Status.Listeners {
		if l.AttachedRoutes != 0 {
			t.Errorf("ListenerSet listener %s: attachedRoutes %d, want 0", l.Name, l.AttachedRoutes)
		}
	}
	if sets := r.Set.ListenerSetsOf(r.Set.Gateways[0]); len(sets) != 2 || sets[0].Name != "a" {
		t.Errorf("ListenerSetsOf(edge) = %v", sets)
	}
	// A Gateway without allowedListeners says nothing of them.
	r = Evaluate(Input{Files: []File{{Name: "gateway.yaml", Data: []byte(lsGateway(""))}}})
	if n := findStatus(r, KindGateway, "edge").Object.Status.AttachedListenerSets; n != nil {
		t.Errorf("attachedListenerSets %d without allowedListeners", *n)
	}
}

// TestListenerSetLastGood: a ListenerSet that its Gateway stops allowing
// stops serving (its last good version fails too); one made invalid keeps
// its last good version.
func TestListenerSetLastGood(t *testing.T) {
	t.Parallel()
	files := func(allowed, listeners string) Input {
		return Input{Files: []File{
			{Name: "gateway.yaml", Data: []byte(lsGateway(allowed))},
			{Name: "ls.yaml", Data: []byte(lsSet("a", "default", listeners))},
		}}
	}
	same := "    namespaces:\n      from: Same\n"
	good := Evaluate(files(same, lsListener("extra", 9090, "HTTP", "")))
	if got := servedListeners(good.Set); !slices.Equal(got, []string{"default/a:extra"}) {
		t.Fatalf("served %v", got)
	}
	in := files(same, lsListener("extra", 0, "HTTP", ""))
	in.LastGood = good.Set
	r := Evaluate(in)
	if got := servedListeners(r.Set); !slices.Equal(got, []string{"default/a:extra"}) {
		t.Errorf("invalid now: served %v, want the last good version", got)
	}
	checkStatuses(t, r, []wantStatus{{kind: KindListenerSet, name: "a", state: StateLastGood, reason: "ListenersNotValid"}})
	in = files("", lsListener("extra", 9090, "HTTP", ""))
	in.LastGood = good.Set
	r = Evaluate(in)
	if got := servedListeners(r.Set); len(got) != 0 {
		t.Errorf("not allowed now: served %v, want nothing", got)
	}
	checkStatuses(t, r, []wantStatus{{kind: KindListenerSet, name: "a", state: StateRejected, reason: "NotAllowed"}})
}
