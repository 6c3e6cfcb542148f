package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// meshRoutesPolicy: the service echo in the namespace mesh and a client
// service in each of the namespaces consumer and other, every one behind a
// sidecar (endpoint ${<ns>-<name>-in}). echo has a producer mesh route (in
// its namespace: a response header, and no backendRefs, so calls go on to
// echo) and a consumer route in the namespace consumer (the suite's
// manifest, plus a header naming the route).
func meshRoutesPolicy() string {
	svc := func(ns, name string) string {
		return `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  ports: [{name: http, port: 80}]
  endpoints: [{address: "${` + ns + `-` + name + `-in}", sidecar: true}]
`
	}
	return yamlDocs(svc("mesh", "echo"), svc("consumer", "client"), svc("other", "client"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-producer, namespace: mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: X-Route, value: producer}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh-echo-add-header, namespace: consumer}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: mesh}]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: X-Header-Set, value: set}, {name: X-Route, value: consumer}]}
      backendRefs: [{name: echo, namespace: mesh, port: 80}]
`)
}

// startNamespacedInstance starts a demo app for the service ns/name at
// ${<ns>-<name>-app} and its sidecar (inbound ${<ns>-<name>-in}, outbound
// ${<ns>-<name>-out}), joined with a token of that namespace.
func (c *cluster) startNamespacedInstance(ns, name string) {
	c.t.Helper()
	prefix := ns + "-" + name
	inbound, outbound := c.addr(prefix+"-in"), c.addr(prefix+"-out")
	app := c.app(prefix+"-app", name, "v1", outbound)
	token, err := c.cli("token", "create", "--service", name, "--namespace", ns, "--ttl", "1h")
	if err != nil {
		c.t.Fatal(err)
	}
	admin := c.addr("sidecar-admin-" + inbound)
	start(c.t, "sidecar "+prefix, "sidecar", "--service", name, "--namespace", ns, "--app", app,
		"--inbound", inbound, "--outbound", outbound, "--xds", c.xds, "--admin", admin,
		"--id", "sidecar~"+name+"."+ns+"~"+inbound, "--token", strings.TrimSpace(token), "--log-level", "debug")
	c.waitReady(admin)
}

// TestMeshConsumerRoute: GEP-1294 (the suite's MeshConsumerRoute). A mesh
// route in another namespace than its parent Service's (consumer route)
// shapes the calls of that namespace's callers only, and replaces the
// producer route for them; the producer route (in the Service's namespace)
// shapes everyone else's. A rule without backendRefs forwards to the parent
// Service.
func TestMeshConsumerRoute(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", meshRoutesPolicy())
	c.startControlPlane()
	for _, s := range [][2]string{{"mesh", "echo"}, {"consumer", "client"}, {"other", "client"}} {
		c.startNamespacedInstance(s[0], s[1])
	}
	routedBy := func(route string) func(*response) error {
		return func(r *response) error {
			if err := servedBy("echo")(r); err != nil {
				return err
			}
			if got := r.header.Get("X-Route"); got != route {
				return fmt.Errorf("X-Route %q, want %q", got, route)
			}
			if got, want := r.header.Get("X-Header-Set"), map[string]string{"consumer": "set"}[route]; got != want {
				return fmt.Errorf("X-Header-Set %q, want %q", got, want)
			}
			return nil
		}
	}
	cases := []struct {
		caller, host, route string
	}{
		{"consumer-client", "echo.mesh", "consumer"},
		{"consumer-client", "echo.mesh:80", "consumer"},
		{"mesh-echo", "echo", "producer"},
		{"mesh-echo", "echo.mesh", "producer"},
		{"other-client", "echo.mesh", "producer"},
	}
	for _, tc := range cases {
		t.Run(tc.caller+" calls "+tc.host, func(t *testing.T) {
			c.expectEventually(tc.caller+" to echo", 15*time.Second, "http://"+c.addr(tc.caller+"-out")+"/", []string{"Host: " + tc.host}, routedBy(tc.route))
		})
	}
	t.Run("calls from the consumer app through its sidecar", func(t *testing.T) {
		c.expectEventually("client calls echo", 10*time.Second, "http://"+c.addr("consumer-client-app")+"/call/echo.mesh/x", nil, func(r *response) error {
			if r.status != http.StatusOK || r.reply.UpstreamStatus != http.StatusOK || r.reply.Upstream == nil || r.reply.Upstream.Service != "echo" {
				return fmt.Errorf("client: %d, upstream %d %+v", r.status, r.reply.UpstreamStatus, r.reply.Upstream)
			}
			return nil
		})
	})
}
