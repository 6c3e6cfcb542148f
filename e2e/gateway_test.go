package e2e

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// gatewayPolicy is two listeners of the Gateway edge, the static services
// alpha, beta, gamma and delta, alpha again over HTTP/2, and a service
// without endpoints.
func gatewayPolicy() string {
	return yamlDocs(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: ${gw.port}}
    - {name: other, protocol: HTTP, port: ${gw2.port}, hostname: other.test}
`, staticServices("delta", "alpha", "beta", "gamma"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: alpha-h2}
spec:
  ports: [{port: 80, protocol: HTTP2}]
  endpoints: [{address: "${alpha}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: nobody}
spec:
  ports: [{port: 80}]
`)
}

const gatewayRoutes = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: main}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  rules:
    - matches: [{path: {type: Exact, value: /exact}}]
      backendRefs: [{name: alpha, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /prefix}}]
      backendRefs: [{name: beta, port: 80}]
    - matches: [{path: {type: Exact, value: /prefix/special}}]
      backendRefs: [{name: gamma, port: 80}]
    - matches: [{path: {type: RegularExpression, value: "/regex/[0-9]+"}}]
      backendRefs: [{name: gamma, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /method}, method: POST}]
      backendRefs: [{name: gamma, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /header}, headers: [{name: X-Env, value: staging}]}]
      backendRefs: [{name: gamma, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /query}, queryParams: [{name: debug, value: "1"}]}]
      backendRefs: [{name: gamma, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: example.com, statusCode: 301}
    - matches: [{path: {type: PathPrefix, value: /rewrite}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
      backendRefs: [{name: beta, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /headers}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            add: [{name: x-added, value: "yes"}]
            remove: [x-secret]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-response, value: modified}]
      backendRefs: [{name: alpha, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /delay}}]
      timeouts: {request: 300ms}
      backendRefs: [{name: alpha, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /h2}}]
      backendRefs: [{name: alpha-h2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /nobody}}]
      backendRefs: [{name: nobody, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs:
        - {name: alpha, port: 80, weight: 90}
        - {name: beta, port: 80, weight: 10}
    - backendRefs: [{name: alpha, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  hostnames: [api.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v1}}]
      backendRefs: [{name: beta, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /prefix}}]
      backendRefs: [{name: delta, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other}
spec:
  parentRefs: [{name: edge, sectionName: other}]
  rules:
    - matches: [{path: {type: Exact, value: /only}}]
      backendRefs: [{name: delta, port: 80}]
`

// TestGatewayRouting sends requests through a gateway node configured by a
// Gateway and two HTTPRoutes, one case per match type and filter.
func TestGatewayRouting(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("gateway.yaml", gatewayPolicy())
	c.policy("routes.yaml", gatewayRoutes)
	c.app("alpha", "alpha", "v1", "")
	c.app("beta", "beta", "v1", "")
	c.app("gamma", "gamma", "v1", "")
	c.app("delta", "delta", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")

	c.expectEventually("gateway serves", 10*time.Second, gw+"/exact", nil, servedBy("alpha"))

	cases := []struct {
		name    string
		method  string
		path    string
		headers []string
		check   func(*response) error
	}{
		{"exact", "GET", "/exact", nil, servedBy("alpha")},
		{"exact is not a prefix", "GET", "/exact/more", nil, servedBy("alpha")}, // falls to the default rule
		{"prefix", "GET", "/prefix", nil, servedBy("beta")},
		{"prefix by segment", "GET", "/prefix/a/b", nil, servedBy("beta")},
		{"prefix is not a string prefix", "GET", "/prefixed", nil, servedBy("alpha")},
		{"exact beats prefix", "GET", "/prefix/special", nil, servedBy("gamma")},
		{"regex", "GET", "/regex/123", nil, servedBy("gamma")},
		{"regex is anchored", "GET", "/regex/12a", nil, servedBy("alpha")},
		{"method match", "POST", "/method", nil, servedBy("gamma")},
		{"method mismatch", "GET", "/method", nil, servedBy("alpha")},
		{"header match", "GET", "/header", []string{"x-env: staging"}, servedBy("gamma")},
		{"header mismatch", "GET", "/header", []string{"x-env: prod"}, servedBy("alpha")},
		{"query match", "GET", "/query?debug=1", nil, servedBy("gamma")},
		{"query mismatch", "GET", "/query?debug=2", nil, servedBy("alpha")},
		{"hostname route", "GET", "/v1/items", []string{"Host: api.example.com"}, servedBy("beta")},
		// The specific hostname's route goes first (the longer /prefix of the
		// catch-all route does not beat it); what it does not match falls
		// through to the routes without hostnames.
		{"hostname route beats longer prefix", "GET", "/prefix/x", []string{"Host: api.example.com"}, servedBy("delta")},
		{"hostname route falls through", "GET", "/other", []string{"Host: api.example.com"}, servedBy("alpha")},
		{"redirect", "GET", "/old/page?x=1", nil, func(r *response) error {
			if r.status != http.StatusMovedPermanently || r.header.Get("Location") != "https://example.com/old/page?x=1" {
				return fmt.Errorf("want 301 to https://example.com/old/page?x=1, got %d %q", r.status, r.header.Get("Location"))
			}
			return nil
		}},
		{"rewrite prefix", "GET", "/rewrite/thing", nil, func(r *response) error {
			if err := servedBy("beta")(r); err != nil {
				return err
			}
			if r.reply.Path != "/new/thing" {
				return fmt.Errorf("upstream saw path %q, want /new/thing", r.reply.Path)
			}
			return nil
		}},
		{"header modifiers", "GET", "/headers", []string{"x-secret: s3cr3t"}, func(r *response) error {
			if err := servedBy("alpha")(r); err != nil {
				return err
			}
			if r.reply.Headers["x-added"] != "yes" || r.reply.Headers["x-secret"] != "" {
				return fmt.Errorf("request headers not modified: %v", r.reply.Headers)
			}
			if r.header.Get("X-Response") != "modified" {
				return fmt.Errorf("response header x-response = %q", r.header.Get("X-Response"))
			}
			return nil
		}},
		{"forwarded headers", "GET", "/exact", nil, func(r *response) error {
			if r.reply.Headers["x-forwarded-for"] != "127.0.0.1" || r.reply.Headers["x-forwarded-proto"] != "http" {
				return fmt.Errorf("x-forwarded-*: %v", r.reply.Headers)
			}
			return nil
		}},
		{"within timeout", "GET", "/delay/10", nil, servedBy("alpha")},
		{"upstream timeout is 504", "GET", "/delay/3000", nil, func(r *response) error {
			if r.status != http.StatusGatewayTimeout {
				return fmt.Errorf("want 504, got %d %q", r.status, r.body)
			}
			return nil
		}},
		{"no endpoint is 503", "GET", "/nobody", nil, func(r *response) error {
			if r.status != http.StatusServiceUnavailable {
				return fmt.Errorf("want 503, got %d %q", r.status, r.body)
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := do(tc.method, gw+tc.path, tc.headers...)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(r); err != nil {
				t.Error(err)
			}
		})
	}

	// A second listener, on its own port with a hostname: only its route.
	gw2 := "http://" + c.addr("gw2")
	for _, tc := range []struct {
		name, path, host string
		check            func(*response) error
	}{
		{"exact path", "/only", "other.test", servedBy("delta")},
		{"no rule matches", "/x", "other.test", notFound},
		{"unknown host", "/only", "else.test", notFound},
	} {
		t.Run("second listener: "+tc.name, func(t *testing.T) {
			r, err := get(gw2+tc.path, "Host: "+tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(r); err != nil {
				t.Error(err)
			}
		})
	}

	t.Run("h2c client and HTTP/1.1 client", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		h2 := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := h2.Get(gw + "/exact")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.Header.Get("X-Demo-Service") != "alpha" {
			t.Errorf("h2c: %s from %q", resp.Proto, resp.Header.Get("X-Demo-Service"))
		}
		r, err := get(gw + "/exact")
		if err != nil || r.reply.Proto != "HTTP/1.1" {
			t.Errorf("HTTP/1.1 upstream proto %q (%v)", r.reply.Proto, err)
		}
	})

	t.Run("HTTP2 service gets h2c upstream", func(t *testing.T) {
		r, err := get(gw + "/h2/x")
		if err != nil {
			t.Fatal(err)
		}
		if err := servedBy("alpha")(r); err != nil {
			t.Fatal(err)
		}
		if r.reply.Proto != "HTTP/2.0" {
			t.Errorf("upstream saw %q, want HTTP/2.0", r.reply.Proto)
		}
	})

	t.Run("weighted split 90/10 over 1000 requests", func(t *testing.T) {
		counts := map[string]int{}
		for i := 0; i < 1000; i++ {
			r, err := get(gw + "/split")
			if err != nil {
				t.Fatal(err)
			}
			if r.status != http.StatusOK {
				t.Fatalf("request %d: %d %s", i, r.status, r.body)
			}
			counts[r.reply.Service]++
		}
		// Binomial(1000, 0.1): sd ≈ 9.5; allow about 5 sd either way.
		if math.Abs(float64(counts["beta"])-100) > 48 || counts["alpha"]+counts["beta"] != 1000 {
			t.Errorf("split = %v, want about 900/100", counts)
		}
		t.Logf("split: %v", counts)
	})

	t.Run("bad request bytes get 400 and the gateway keeps serving", func(t *testing.T) {
		status, err := rawRequest(c.addr("gw"), "GET /exact HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(status, "HTTP/1.1 400") {
			t.Errorf("malformed request answered %q", status)
		}
		r, err := get(gw + "/exact")
		if err != nil || r.reply.Service != "alpha" {
			t.Fatalf("gateway after a bad request: %v %+v", err, r)
		}
	})
}

func notFound(r *response) error {
	if r.status != http.StatusNotFound || r.body != "no route\n" {
		return fmt.Errorf("want 404 \"no route\", got %d %q", r.status, r.body)
	}
	return nil
}
