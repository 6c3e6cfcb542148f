package openapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
)

// FuzzRequests sends requests of a method, path, query and body the input
// picks through the filter with the orders document: never a panic; the
// request is passed on, or answered 400 or 413 with a problem+json body
// that names a field.
func FuzzRequests(f *testing.F) {
	f.Add("POST", "/v1/orders", "", `{"items":[{"sku":"a","qty":0}]}`)
	f.Add("GET", "/v1/orders", "limit=1000", "")
	f.Add("GET", "/v1/orders/x", "", "")
	f.Add("PUT", "/v1/orders/%ff", "limit=%zz", "{")
	built, err := newFilter("openapi", value(f, map[string]any{"document": ordersAPI, "max_body_bytes": 64}), httpfilter.Env{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, query, body string) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") {
			return
		}
		u, err := url.Parse("http://example.com" + path)
		if err != nil {
			return
		}
		u.RawQuery = query
		req := httptest.NewRequest(method, "http://example.com/", strings.NewReader(body))
		req.URL = u
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Tenant", "t")
		calls := 0
		w := httptest.NewRecorder()
		built.Wrap(upstreamOf(200, "[]", &calls)).ServeHTTP(w, req, nil)
		switch w.Code {
		case http.StatusOK:
			if calls != 1 {
				t.Fatalf("200 without the upstream")
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var p problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Field == "" || calls != 0 {
				t.Fatalf("%d %q (upstream calls %d): want a problem naming a field", w.Code, w.Body, calls)
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}

// validMethod: a token, as net/http accepts.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
