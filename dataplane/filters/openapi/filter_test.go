package openapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// ordersAPI is the document of the tests: list orders (limit 1..100),
// create one (items of sku and qty ≥ 1), read one by numeric id, with a
// required X-Tenant header.
const ordersAPI = `
openapi: 3.0.3
info: {title: orders, version: "1"}
servers: [{url: "https://api.example.com/v1"}]
paths:
  /orders:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
      responses:
        "200":
          description: the orders
          content:
            application/json:
              schema: {type: array, items: {type: object, required: [id], properties: {id: {type: integer}}}}
    post:
      parameters:
        - {name: X-Tenant, in: header, required: true, schema: {type: string, minLength: 1}}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [items]
              additionalProperties: false
              properties:
                items:
                  type: array
                  minItems: 1
                  items:
                    type: object
                    required: [sku, qty]
                    properties:
                      sku: {type: string}
                      qty: {type: integer, minimum: 1}
      responses:
        "201": {description: created}
  /orders/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses:
        "200": {description: the order}
`

func value(t testing.TB, fields map[string]any) *structpb.Struct {
	t.Helper()
	v, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// upstreamOf answers status with body, counting its calls.
func upstreamOf(status int, body string, calls *int) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
		*calls++
		got, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Got-Body", string(got))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}

// TestRequests: good requests pass to the upstream with their body intact;
// bad ones get 400 (413 for a body over the limit) with a problem+json
// body naming the field, and are counted.
func TestRequests(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		body       string
		wantStatus int    // 0: passed to the upstream
		wantField  string // of the problem
	}{
		{name: "list", method: "GET", target: "/v1/orders?limit=10"},
		{name: "list without limit", method: "GET", target: "/v1/orders"},
		{name: "limit too high", method: "GET", target: "/v1/orders?limit=1000", wantStatus: 400, wantField: "query.limit"},
		{name: "limit not a number", method: "GET", target: "/v1/orders?limit=ten", wantStatus: 400, wantField: "query.limit"},
		{name: "create", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":[{"sku":"a","qty":2}]}`},
		{name: "qty zero", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":[{"sku":"a","qty":0}]}`, wantStatus: 400, wantField: "/body/items/0/qty"},
		{name: "second item without sku", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":[{"sku":"a","qty":1},{"qty":1}]}`, wantStatus: 400, wantField: "/body/items/1/sku"},
		{name: "unknown property", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":[{"sku":"a","qty":1}],"x":1}`, wantStatus: 400, wantField: "/body"}, // the object; the detail names "x"
		{name: "not JSON", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":`, wantStatus: 400, wantField: "/body"},
		{name: "body missing", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			wantStatus: 400, wantField: "/body"},
		{name: "header missing", method: "POST", target: "/v1/orders",
			body: `{"items":[{"sku":"a","qty":1}]}`, wantStatus: 400, wantField: "header.X-Tenant"},
		{name: "body too large", method: "POST", target: "/v1/orders", header: map[string]string{"X-Tenant": "t1"},
			body: `{"items":[{"sku":"` + strings.Repeat("a", 300) + `","qty":1}]}`, wantStatus: 413, wantField: "body"},
		{name: "path parameter", method: "GET", target: "/v1/orders/7"},
		{name: "path parameter not a number", method: "GET", target: "/v1/orders/seven", wantStatus: 400, wantField: "path.id"},
		{name: "method", method: "DELETE", target: "/v1/orders", wantStatus: 400, wantField: "method"},
		{name: "unknown path", method: "GET", target: "/v1/customers", wantStatus: 400, wantField: "path"},
		{name: "outside the server's path", method: "GET", target: "/orders", wantStatus: 400, wantField: "path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stats := new(httpfilter.Stats)
			f, err := newFilter("openapi", value(t, map[string]any{"document": ordersAPI, "max_body_bytes": 256}),
				httpfilter.Env{Stats: stats})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			h := f.Wrap(upstreamOf(200, "[]", &calls))
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req := httptest.NewRequest(tc.method, "http://anything.example"+tc.target, body)
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req, nil)
			if tc.wantStatus == 0 {
				if calls != 1 || w.Code != 200 {
					t.Fatalf("got %d (%d upstream calls), want it passed: %s", w.Code, calls, w.Body)
				}
				if got := w.Header().Get("X-Got-Body"); got != tc.body {
					t.Errorf("upstream got body %q, want %q", got, tc.body)
				}
				return
			}
			if calls != 0 {
				t.Errorf("the upstream was called")
			}
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.wantStatus, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			var p map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatalf("problem body %q: %v", w.Body, err)
			}
			if p["field"] != tc.wantField || p["status"] != float64(tc.wantStatus) || p["type"] != ProblemType ||
				p["title"] == "" || p["detail"] == "" {
				t.Errorf("problem %v, want field %q", p, tc.wantField)
			}
			if n := stats.Counters(StatRequestInvalid).Get(""); n != 1 {
				t.Errorf("%s = %d, want 1", StatRequestInvalid, n)
			}
		})
	}
}

// TestNoDocument: a route without a document is passed on untouched, its
// body unread.
func TestNoDocument(t *testing.T) {
	t.Parallel()
	f, err := newFilter("openapi", value(t, map[string]any{}), httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	w := httptest.NewRecorder()
	f.Wrap(upstreamOf(200, "", &calls)).ServeHTTP(w, httptest.NewRequest("DELETE", "/anything", strings.NewReader("x")), nil)
	if calls != 1 || w.Header().Get("X-Got-Body") != "x" {
		t.Fatalf("calls %d, body %q", calls, w.Header().Get("X-Got-Body"))
	}
}

// TestResponses: with report_responses, a response that does not match
// is sent unchanged, and counted; one that matches is not.
func TestResponses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		status       int
		body         string
		wantMismatch uint64
	}{
		{name: "matches", status: 200, body: `[{"id":1}]`},
		{name: "wrong body", status: 200, body: `[{"id":"one"}]`, wantMismatch: 1},
		{name: "status not listed", status: 418, body: `[]`, wantMismatch: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stats := new(httpfilter.Stats)
			f, err := newFilter("openapi", value(t, map[string]any{"document": ordersAPI, "report_responses": true}),
				httpfilter.Env{Stats: stats})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			w := httptest.NewRecorder()
			f.Wrap(upstreamOf(tc.status, tc.body, &calls)).ServeHTTP(w, httptest.NewRequest("GET", "/v1/orders", nil), nil)
			if w.Code != tc.status || w.Body.String() != tc.body {
				t.Fatalf("got %d %q, want the upstream's %d %q", w.Code, w.Body, tc.status, tc.body)
			}
			if n := stats.Counters(StatResponseMismatch).Get(""); n != tc.wantMismatch {
				t.Errorf("%s = %d, want %d", StatResponseMismatch, n, tc.wantMismatch)
			}
		})
	}
}

// TestConfigs: values the filter refuses, with the field named.
func TestConfigs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		fields map[string]any
		want   string
	}{
		{name: "not OpenAPI", fields: map[string]any{"document": "swagger: '2.0'\ninfo: {title: x, version: '1'}\npaths: {}"}, want: "document"},
		{name: "not YAML", fields: map[string]any{"document": "{"}, want: "document"},
		{name: "bad schema", fields: map[string]any{"document": strings.Replace(ordersAPI, "type: integer, minimum: 1, maximum: 100", "type: integr", 1)}, want: "document"},
		{name: "external ref", fields: map[string]any{"document": strings.Replace(ordersAPI, "schema: {type: integer}", "schema: {$ref: 'other.yaml#/X'}", 1)}, want: "document"},
		{name: "body limit", fields: map[string]any{"document": ordersAPI, "max_body_bytes": 0}, want: "max_body_bytes"},
		{name: "report without document", fields: map[string]any{"report_responses": true}, want: "document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := newPerRoute(value(t, tc.fields))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestCheckValue: the subset refuses unknown fields and bad values.
func TestCheckValue(t *testing.T) {
	t.Parallel()
	if v := checkValue(value(t, map[string]any{"document": ordersAPI, "max_body_bytes": 10, "report_responses": true})); len(v) != 0 {
		t.Errorf("good value: %v", v)
	}
	if v := checkValue(value(t, map[string]any{"other": 1})); len(v) != 1 {
		t.Errorf("unknown field: %v", v)
	}
	if v := checkValue(value(t, map[string]any{"document": strings.Repeat("x", MaxDocumentBytes+1)})); len(v) != 1 {
		t.Errorf("document too large: %v", v)
	}
}

// TestNoDocumentCost: a request of a route without a document costs no
// allocation in the filter.
func TestNoDocumentCost(t *testing.T) {
	f, err := newFilter("openapi", value(t, map[string]any{}), httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	req := httptest.NewRequest("GET", "/anything", nil)
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, req, nil) }); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}
