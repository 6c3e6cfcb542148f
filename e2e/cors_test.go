package e2e

import (
	"net/http"
	"testing"
)

// corsFilter is an HTTPRoute CORS filter (YAML, indented for a rule's
// filters).
const corsFilter = `
      filters:
        - type: CORS
          cors:
            allowOrigins: ["https://app.example.com", "https://*.example.org"]
            allowMethods: [GET, PUT]
            allowHeaders: [x-token]
            exposeHeaders: [x-trace]
            allowCredentials: true
            maxAge: 60`

// TestHTTPRouteCORS: an HTTPRoute CORS filter, at the gateway (a Gateway
// route) and at a sidecar (a mesh route): a preflight from an allowed
// origin is answered by the proxy with the allow headers, never reaching
// the backend; one from another origin is answered without them; an
// actual request from an allowed origin (a wildcard one included) gets
// the backend's answer with the allow-origin, credentials and expose
// headers, and one from another origin gets it without.
func TestHTTPRouteCORS(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	api := startTestBackend(c, "api", nil)
	c.policy("cors.yaml", yamlDocs(edgeGateway, meshServices("client"), serviceOf("api", "api"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: api, port: 80}]`+corsFilter+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: api}]
  rules:
    - backendRefs: [{group: meshgate.dev, kind: Service, name: api, port: 80}]`+corsFilter+`
`))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "api") {
		send := func(method string, headers ...string) *response {
			t.Helper()
			r, err := do(method, e.base+"/orders", append(append([]string(nil), e.headers...), headers...)...)
			if err != nil {
				t.Fatalf("%s: %s: %v", e.name, method, err)
			}
			return r
		}
		expect := func(what string, r *response, want map[string]string) {
			t.Helper()
			for k, v := range want {
				if got := r.header.Get(k); got != v || v == "" && len(r.header.Values(k)) > 0 {
					t.Errorf("%s: %s: %s %q, want %q (headers %v)", e.name, what, k, got, v, r.header)
				}
			}
		}

		before := api.requests.Load()
		r := send(http.MethodOptions, "Origin: https://app.example.com", "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: x-token")
		if r.status != http.StatusOK || r.header.Get("X-Backend") != "" {
			t.Errorf("%s: preflight: %d, headers %v; want the proxy's 200", e.name, r.status, r.header)
		}
		expect("preflight", r, map[string]string{
			"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Methods": "GET, PUT",
			"Access-Control-Allow-Headers": "x-token", "Access-Control-Max-Age": "60",
			"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-trace",
		})
		r = send(http.MethodOptions, "Origin: https://evil.example.net", "Access-Control-Request-Method: PUT")
		if r.status != http.StatusOK || r.header.Get("X-Backend") != "" {
			t.Errorf("%s: preflight from another origin: %d, headers %v; want the proxy's 200", e.name, r.status, r.header)
		}
		expect("preflight from another origin", r, map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""})
		if got := api.requests.Load() - before; got != 0 {
			t.Errorf("%s: the backend received %d preflights, want none", e.name, got)
		}

		r = send(http.MethodGet, "Origin: https://shop.eu.example.org")
		if r.status != http.StatusOK || r.header.Get("X-Backend") != "api" {
			t.Errorf("%s: actual request: %d, headers %v; want the backend's 200", e.name, r.status, r.header)
		}
		expect("actual request", r, map[string]string{
			"Access-Control-Allow-Origin": "https://shop.eu.example.org", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Expose-Headers": "x-trace", "Access-Control-Allow-Methods": "",
		})
		r = send(http.MethodGet, "Origin: https://example.org.evil.net")
		if r.status != http.StatusOK || r.header.Get("X-Backend") != "api" {
			t.Errorf("%s: request from another origin: %d, headers %v; want the backend's 200", e.name, r.status, r.header)
		}
		expect("request from another origin", r, map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Credentials": ""})
	}
}
