package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ordersOpenAPI is the OpenAPI document of TestRequestValidation, with
// maxLimit the maximum of GET /orders's limit parameter.
func ordersOpenAPI(maxLimit int) string {
	return `{
  "openapi": "3.0.3",
  "info": {"title": "orders", "version": "1"},
  "paths": {
    "/": {"get": {"responses": {"200": {"description": "ok"}}}},
    "/orders": {
      "get": {
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": ` + fmt.Sprint(maxLimit) + `}}],
        "responses": {"200": {"description": "ok"}}
      },
      "post": {
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
          "type": "object", "required": ["items"],
          "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}}}}}},
        "responses": {"200": {"description": "ok"}}
      }
    }
  }
}`
}

// TestRequestValidation: a TrafficPolicy requestValidation whose OpenAPI
// document is a file beside the policy, on a gateway route and a mesh
// route: valid requests reach the backend; a bad parameter, body or
// method gets 400 with an RFC 9457 problem naming the field, at the
// gateway and at a sidecar; the document changed on disk is picked up
// live; a broken document is reported by the control plane and the
// previous one keeps serving.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	startTestBackend(c, "orders", nil)
	docPath := filepath.Join(c.dir, "orders-api.json")
	writeFile(t, docPath, ordersOpenAPI(100))
	c.policy("validation.yaml", yamlDocs(edgeGateway, routeTo("orders"), meshServices("client"), serviceOf("orders", "orders"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-mesh}
spec:
  parentRefs: [{group: meshgate.dev, kind: Service, name: orders}]
  rules:
    - backendRefs: [{group: meshgate.dev, kind: Service, name: orders, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders-api}
spec:
  targetRefs: [{kind: HTTPRoute, name: app}, {kind: HTTPRoute, name: orders-mesh}]
  requestValidation:
    openAPI: {file: orders-api.json}
    maxBodyBytes: 4096
`))
	c.startControlPlane()
	entries := startBothEntries(c, "orders")

	send := func(e entryPoint, method, path, body string) (*http.Response, map[string]any, error) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, e.base+path, rd)
		if err != nil {
			return nil, nil, err
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for _, h := range e.headers {
			if k, v, _ := strings.Cut(h, ":"); strings.EqualFold(k, "host") {
				req.Host = strings.TrimSpace(v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, nil, err
		}
		var problem map[string]any
		if resp.Header.Get("Content-Type") == "application/problem+json" {
			if err := json.Unmarshal(data, &problem); err != nil {
				return nil, nil, fmt.Errorf("problem body %q: %w", data, err)
			}
		}
		return resp, problem, nil
	}
	// check sends a request: wantField "" wants it passed to the backend,
	// else a 400 problem naming wantField.
	check := func(e entryPoint, method, path, body, wantField string) error {
		resp, problem, err := send(e, method, path, body)
		if err != nil {
			return err
		}
		if wantField == "" {
			if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Backend") != "orders" {
				return fmt.Errorf("%s %s: %d %v, want it passed to the backend", method, path, resp.StatusCode, problem)
			}
			return nil
		}
		if resp.StatusCode != http.StatusBadRequest || problem["field"] != wantField || problem["status"] != float64(400) {
			return fmt.Errorf("%s %s: %d %v, want 400 naming %s", method, path, resp.StatusCode, problem, wantField)
		}
		return nil
	}
	for _, e := range entries {
		for _, tc := range []struct{ method, path, body, wantField string }{
			{"GET", "/orders?limit=5", "", ""},
			{"POST", "/orders", `{"items":[{"sku":"a","qty":2}]}`, ""},
			{"GET", "/orders?limit=500", "", "query.limit"},
			{"POST", "/orders", `{"items":[{"sku":"a","qty":0}]}`, "/body/items/0/qty"},
			{"DELETE", "/orders", "", "method"},
			{"GET", "/customers", "", "path"},
		} {
			// The first requests may meet the routes before the
			// validation arrives: the control plane pushes them together,
			// but a proxy may have started before.
			eventually(t, 15*time.Second, e.name+": "+tc.method+" "+tc.path, func() error {
				return check(e, tc.method, tc.path, tc.body, tc.wantField)
			})
		}
	}

	// The document changed on disk: limit may now be up to 1000.
	writeFile(t, docPath, ordersOpenAPI(1000))
	for _, e := range entries {
		eventually(t, 20*time.Second, e.name+": the changed document", func() error {
			return check(e, "GET", "/orders?limit=500", "", "")
		})
	}

	// A broken document: the control plane says so, naming the policy
	// file and field; the previous document keeps serving.
	writeFile(t, docPath, `{"openapi": "3.0.3", "paths": {"/orders": {"get": {"parameters": [{"name": "limit"}]}}}}`)
	eventually(t, 20*time.Second, "the broken document reported", func() error {
		if out := c.cp.out.String(); !strings.Contains(out, "spec.requestValidation.openAPI.file") {
			return fmt.Errorf("control plane log does not name spec.requestValidation.openAPI.file")
		}
		return nil
	})
	for _, e := range entries {
		for _, tc := range []struct{ method, path, body, wantField string }{
			{"GET", "/orders?limit=500", "", ""},
			{"GET", "/orders?limit=5000", "", "query.limit"},
			{"POST", "/orders", `{"items":[{"qty":1}]}`, "/body/items/0/sku"},
		} {
			if err := check(e, tc.method, tc.path, tc.body, tc.wantField); err != nil {
				t.Errorf("%s, with the document broken: %v", e.name, err)
			}
		}
	}
}
