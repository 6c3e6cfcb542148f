package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// hostPortPolicy is the Gateway edge with a listener on ${gw.port} and one on
// ${gw2.port}, a route attached to each by port (alpha, beta), a redirect
// on the first, and the mesh services frontend and orders behind sidecars.
func hostPortPolicy() string {
	return yamlDocs(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: listener-1, protocol: HTTP, port: ${gw.port}}
    - {name: listener-2, protocol: HTTP, port: ${gw2.port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1}
spec:
  parentRefs: [{name: edge, port: ${gw.port}}]
  hostnames: [foo.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /secure}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
    - matches: [{path: {type: PathPrefix, value: /moved}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: bar.com}}]
    - backendRefs: [{name: alpha, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2}
spec:
  parentRefs: [{name: edge, port: ${gw2.port}}]
  hostnames: [foo.com, bar.com]
  rules:
    - backendRefs: [{name: beta, port: 80}]
`, staticServices("alpha", "beta"), meshServices("frontend", "orders"))
}

// TestHostForwardedUnchanged: the Host header reaches the backend as the
// client sent it, port included, while routing ignores the port at a
// gateway (HTTPRouteListenerPortMatching) and uses it at a sidecar's
// outbound listener; over HTTP/1.1 and HTTP/2 (:authority). Redirects take
// their port from the listener and the filter, never from the Host.
func TestHostForwardedUnchanged(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("policy.yaml", hostPortPolicy())
	c.app("alpha", "alpha", "v1", "")
	c.app("beta", "beta", "v1", "")
	c.startControlPlane()
	for _, svc := range []string{"frontend", "orders"} {
		c.startInstance(c.sidecar, svc, svc, "v1")
	}
	c.gateway("edge")
	gw, gw2 := "http://"+c.addr("gw"), "http://"+c.addr("gw2")
	port1, port2 := c.vars["gw.port"], c.vars["gw2.port"]

	hostIs := func(svc, host string) func(*response) error {
		return func(r *response) error {
			if err := servedBy(svc)(r); err != nil {
				return err
			}
			if r.reply.Host != host {
				return fmt.Errorf("%s received Host %q, want %q", svc, r.reply.Host, host)
			}
			return nil
		}
	}
	c.expectEventually("listener-2 serves", 15*time.Second, gw2+"/", []string{"Host: foo.com:" + port2}, hostIs("beta", "foo.com:"+port2))
	c.expectEventually("frontend's outbound serves", 15*time.Second, "http://"+c.addr("frontend-out")+"/", []string{"Host: orders:80"}, hostIs("orders", "orders:80"))

	cases := []struct {
		name    string
		url     string
		headers []string
		check   func(*response) error
	}{
		{"listener-1 without port", gw + "/", []string{"Host: foo.com"}, hostIs("alpha", "foo.com")},
		{"listener-1 with its port", gw + "/", []string{"Host: foo.com:" + port1}, hostIs("alpha", "foo.com:"+port1)},
		{"listener-2 with its port", gw2 + "/", []string{"Host: foo.com:" + port2}, hostIs("beta", "foo.com:"+port2)},
		{"listener-2 other hostname", gw2 + "/", []string{"Host: bar.com:" + port2}, hostIs("beta", "bar.com:"+port2)},
		{"listener-1 does not serve bar.com", gw + "/", []string{"Host: bar.com:" + port1}, notFound},
		{"scheme redirect drops the Host port", gw + "/secure/x", []string{"Host: foo.com:" + port1}, redirectsTo("https://foo.com/secure/x")},
		{"hostname redirect keeps the listener port", gw + "/moved/x", []string{"Host: foo.com:1234"}, redirectsTo("http://bar.com:" + port1 + "/moved/x")},
		// Through the frontend's sidecar (outbound: the port selects the
		// service port) and orders' sidecar (inbound) to the orders app.
		{"sidecar outbound and inbound with port", "http://" + c.addr("frontend-out") + "/", []string{"Host: orders:80"}, hostIs("orders", "orders:80")},
		{"sidecar outbound without port", "http://" + c.addr("frontend-out") + "/", []string{"Host: orders.default"}, hostIs("orders", "orders.default")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := get(tc.url, tc.headers...)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(r); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("HTTP/2 :authority", func(t *testing.T) {
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true)
		h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: protocols}}
		for _, tc := range []struct{ url, host, svc string }{
			{gw2 + "/", "foo.com:" + port2, "beta"},
			{"http://" + c.addr("frontend-out") + "/", "orders:80", "orders"},
		} {
			req, err := http.NewRequest(http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := h2c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			r := &response{status: resp.StatusCode, header: resp.Header, body: string(body)}
			_ = json.Unmarshal(body, &r.reply)
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s: answered over %s, want HTTP/2", tc.url, resp.Proto)
			}
			if err := hostIs(tc.svc, tc.host)(r); err != nil {
				t.Fatalf("%s: %v", tc.url, err)
			}
		}
	})
}

// redirectsTo checks a 302 to location.
func redirectsTo(location string) func(*response) error {
	return func(r *response) error {
		if r.status != http.StatusFound || r.header.Get("Location") != location {
			return fmt.Errorf("want 302 to %s, got %d %q", location, r.status, r.header.Get("Location"))
		}
		return nil
	}
}
