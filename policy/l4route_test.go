package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const l4Gateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: 8080}
    - {name: db, protocol: TCP, port: 5432}
    - {name: tls, protocol: TLS, port: 8443, tls: {mode: Passthrough}}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: pg}
spec:
  ports: [{port: 5432}]
---
`

// TestL4Routes: TCPRoutes and TLSRoutes attach to the listeners of their
// protocol only (NotAllowedByListeners elsewhere), HTTPRoutes no longer to
// TCP or TLS ones; listeners say the kind they take; a TLS listener is
// Passthrough; every field error names file, line and field.
func TestL4Routes(t *testing.T) {
	t.Parallel()
	route := func(kind, apiVersion, name, parent, rules string) string {
		return fmt.Sprintf("---\napiVersion: %s\nkind: %s\nmetadata: {name: %s}\nspec:\n  parentRefs: [%s]\n%s", apiVersion, kind, name, parent, rules)
	}
	pgRule := "  rules:\n    - backendRefs: [{name: pg, port: 5432}]\n"
	for _, tt := range []struct {
		name   string
		policy string
		errors []string
		// parents are "kind/name: condition" of the route statuses.
		parents []string
		// listeners are "name: kind attached" of the Gateway's.
		listeners []string
	}{{
		name: "each route on its listener",
		policy: l4Gateway + route("TCPRoute", "gateway.networking.k8s.io/v1alpha2", "db", "{name: edge}", pgRule) +
			route("TLSRoute", "gateway.networking.k8s.io/v1", "secure", "{name: edge}", "  hostnames: [a.example.com]\n"+pgRule) +
			route("HTTPRoute", "gateway.networking.k8s.io/v1", "web", "{name: edge}", pgRule),
		parents:   []string{"HTTPRoute/web: Accepted=True", "TCPRoute/db: Accepted=True", "TLSRoute/secure: Accepted=True"},
		listeners: []string{"http: HTTPRouteGRPCRoute 1", "db: TCPRoute 1", "tls: TLSRoute 1"},
	}, {
		name: "a route on another protocol's listener",
		policy: l4Gateway + route("TCPRoute", "gateway.networking.k8s.io/v1", "db", "{name: edge, sectionName: http}", pgRule) +
			route("HTTPRoute", "gateway.networking.k8s.io/v1", "web", "{name: edge, sectionName: db}", pgRule),
		errors: []string{
			`l4.yaml:22: spec.parentRefs[0]: the listeners of gateway "edge" this parentRef selects do not take TCPRoutes (their protocol is not TCP)`,
			`l4.yaml:30: spec.parentRefs[0]: the listeners of gateway "edge" this parentRef selects do not take HTTPRoutes (their protocol is not HTTP or HTTPS)`,
		},
		parents:   []string{"HTTPRoute/web: Accepted=False/NotAllowedByListeners", "TCPRoute/db: Accepted=False/NotAllowedByListeners"},
		listeners: []string{"http: HTTPRouteGRPCRoute 0", "db: TCPRoute 0"},
	}, {
		name:   "a TLS listener allowing TCPRoutes too: InvalidRouteKinds, TLSRoute supported",
		policy: strings.Replace(l4Gateway, "tls: {mode: Passthrough}}", "tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}", 1),
		errors: []string{
			`l4.yaml:9: spec.listeners[2].allowedRoutes.kinds[0]: route kind TCPRoute does not attach to a listener of protocol TLS (it takes TLSRoute)`,
		},
		listeners: []string{"tls: TLSRoute 0"},
	}, {
		name: "bad fields",
		policy: strings.Replace(l4Gateway, "tls: {mode: Passthrough}", "tls: {mode: Terminate, certificateRefs: [{name: c}]}", 1) +
			route("TCPRoute", "gateway.networking.k8s.io/v1", "db", "{name: edge}", pgRule+"    - backendRefs: [{name: pg, port: 5432}]\n") +
			route("TLSRoute", "gateway.networking.k8s.io/v1", "bad", "{name: edge}", "  hostnames: [\"Bad_Host\"]\n"+pgRule),
		errors: []string{
			`l4.yaml:9: spec.listeners[2].tls.certificateRefs[0].name: Secret default/c does not exist`,
			`l4.yaml:23: spec.rules: 2 rules: a TCPRoute has one rule`,
			// The one TLS listener is not programmed.
			`l4.yaml:31: spec.parentRefs[0]: the listeners of gateway "edge" this parentRef selects do not take TLSRoutes`,
			`l4.yaml:32: spec.hostnames[0]: invalid hostname "Bad_Host"`,
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Evaluate(Input{Files: []File{{Name: "l4.yaml", Data: []byte(tt.policy)}}})
			var got []string
			for _, e := range res.Errors {
				got = append(got, e.Error())
			}
			if len(got) != len(tt.errors) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.errors, "\n"))
			}
			for i, want := range tt.errors {
				if !strings.HasPrefix(got[i], want) {
					t.Errorf("error %d: %s\nwant prefix %s", i, got[i], want)
				}
			}
			var parents, listeners []string
			for _, st := range res.Statuses {
				for _, ps := range st.Object.Status.Parents {
					for _, c := range ps.Conditions {
						if c.Type == "Accepted" {
							s := fmt.Sprintf("%s/%s: Accepted=%s", st.Kind, st.Name, c.Status)
							if c.Status != "True" {
								s += "/" + c.Reason
							}
							parents = append(parents, s)
						}
					}
				}
				if st.Kind == KindGateway {
					for _, ls := range st.Object.Status.Listeners {
						kinds := ""
						for _, k := range ls.SupportedKinds {
							kinds += string(k.Kind)
						}
						listeners = append(listeners, fmt.Sprintf("%s: %s %d", ls.Name, kinds, ls.AttachedRoutes))
					}
				}
			}
			for _, want := range tt.parents {
				if !slices.Contains(parents, want) {
					t.Errorf("parent statuses %q: no %q", parents, want)
				}
			}
			for _, want := range tt.listeners {
				if !slices.Contains(listeners, want) {
					t.Errorf("listener statuses %q: no %q", listeners, want)
				}
			}
		})
	}
}

// TestTCPServices: a Service's ports are all TCP or none; a SecurityPolicy
// rule with HTTP attributes (to) targeting a TCP service is an error.
func TestTCPServices(t *testing.T) {
	t.Parallel()
	const db = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: db}
spec:
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: mixed}
spec:
  ports: [{name: sql, port: 5432, protocol: TCP}, {name: web, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: guard}
spec:
  targetRefs: [{kind: Service, name: db}]
  rules:
    - {action: ALLOW, from: [{services: [web]}]}
    - {action: DENY, to: [{paths: [/admin]}]}
    - {action: ALLOW, from: [{principals: [alice]}]}
`
	res := Evaluate(Input{Files: []File{{Name: "db.yaml", Data: []byte(db)}}})
	var got []string
	for _, e := range res.Errors {
		got = append(got, e.Error())
	}
	want := []string{
		`db.yaml:11: spec.ports[0].protocol: protocol TCP: every port of the service must be TCP (spec.ports[1] is HTTP)`,
		`db.yaml:20: spec.rules[1].to: service "db" is TCP`,
		`db.yaml:21: spec.rules[2].from[0]: service "db" is TCP: a connection carries no token`,
	}
	if len(got) != len(want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d: %s\nwant prefix %s", i, got[i], want[i])
		}
	}
}

// TestCreationTimestamp: metadata.creationTimestamp (RFC 3339, quoted or
// not, as Kubernetes writes it) is the route's creation time; another form
// is an error naming file, line and field.
func TestCreationTimestamp(t *testing.T) {
	t.Parallel()
	doc := func(ts string) string {
		return l4Gateway + "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  name: db\n  creationTimestamp: " + ts +
			"\nspec:\n  parentRefs: [{name: edge}]\n  rules:\n    - backendRefs: [{name: pg, port: 5432}]\n"
	}
	for _, tt := range []struct {
		name, timestamp, want, err string
	}{
		{name: "unquoted", timestamp: "2026-01-02T15:04:05Z", want: "2026-01-02T15:04:05Z"},
		{name: "quoted with an offset", timestamp: `"2026-01-02T16:04:05+01:00"`, want: "2026-01-02T15:04:05Z"},
		{name: "not RFC 3339", timestamp: `"yesterday"`, err: `l4.yaml:21: metadata.creationTimestamp: invalid creationTimestamp "yesterday"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Evaluate(Input{Files: []File{{Name: "l4.yaml", Data: []byte(doc(tt.timestamp))}}})
			if tt.err != "" {
				if len(res.Errors) != 1 || !strings.HasPrefix(res.Errors[0].Error(), tt.err) {
					t.Fatalf("errors %v, want one starting %s", res.Errors, tt.err)
				}
				return
			}
			if len(res.Errors) > 0 || res.Set == nil || len(res.Set.TCPRoutes) != 1 {
				t.Fatalf("errors %v; want one TCPRoute", res.Errors)
			}
			if got := res.Set.TCPRoutes[0].CreationTimestamp.UTC().Format(time.RFC3339); got != tt.want {
				t.Errorf("creation time = %s, want %s", got, tt.want)
			}
		})
	}
}
