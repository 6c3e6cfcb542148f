package apikeyauth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// FuzzAPIKey: whatever a client sends as the key, in the header or the
// query, only the key whose hash is configured passes.
func FuzzAPIKey(f *testing.F) {
	fl, err := newFilter("k", &apikeyv3.ApiKeyAuth{
		Credentials: []*apikeyv3.Credential{{Key: hashOf("k-acme"), Client: "acme"}},
		KeySources:  []*apikeyv3.KeySource{{Header: "x-api-key"}, {Query: "api_key"}},
	}, httpfilter.Env{Stats: new(httpfilter.Stats)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("k-acme", "")
	f.Add("", "k-acme")
	f.Add(hashOf("k-acme"), "%00")
	f.Fuzz(func(t *testing.T, header, query string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Api-Key", header)
		q := r.URL.Query()
		q.Set("api_key", query)
		r.URL.RawQuery = q.Encode()
		ok := false
		fl.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) { ok = true })).ServeHTTP(httptest.NewRecorder(), r, nil)
		want := r.Header.Get("X-Api-Key") == "k-acme" || (r.Header.Get("X-Api-Key") == "" && query == "k-acme")
		if ok != want {
			t.Fatalf("header %q query %q: passed %v, want %v", header, query, ok, want)
		}
	})
}
