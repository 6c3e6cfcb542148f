package apikeyauth

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"

	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

func hashOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// TestAPIKeys: a key whose SHA-256 is a credential's is its consumer's, from
// a header or a query parameter, hidden from the backend; the hash itself,
// a wrong key or none is 401.
func TestAPIKeys(t *testing.T) {
	t.Parallel()
	stats := new(httpfilter.Stats)
	f, err := newFilter("keys", &apikeyv3.ApiKeyAuth{
		Credentials: []*apikeyv3.Credential{{Key: hashOf("k-acme"), Client: "acme"}, {Key: hashOf("k-globex"), Client: "globex"}},
		KeySources:  []*apikeyv3.KeySource{{Header: "x-api-key"}, {Query: "api_key"}},
		Forwarding:  &apikeyv3.Forwarding{Header: "x-consumer", HideCredentials: true},
	}, httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	var seen *http.Request
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) { seen = r }))
	for _, tc := range []struct {
		name, target, header string
		want                 int
		consumer             string
	}{
		{"header", "/", "k-acme", 200, "acme"},
		{"query", "/?api_key=k-globex&x=1", "", 200, "globex"},
		{"wrong key", "/", "k-nobody", 401, ""},
		{"the hash itself", "/", hashOf("k-acme"), 401, ""},
		{"none", "/", "", 401, ""},
	} {
		seen = nil
		r := httptest.NewRequest("GET", tc.target, nil)
		if tc.header != "" {
			r.Header.Set("X-Api-Key", tc.header)
		}
		r.Header.Set("X-Consumer", "forged")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r, nil)
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, w.Code, tc.want)
			continue
		}
		if tc.want != 200 {
			continue
		}
		if got := httpfilter.Principal(seen.Context()); got != tc.consumer {
			t.Errorf("%s: principal %q, want %q", tc.name, got, tc.consumer)
		}
		if got := seen.Header.Get("X-Consumer"); got != tc.consumer {
			t.Errorf("%s: X-Consumer %q", tc.name, got)
		}
		if seen.Header.Get("X-Api-Key") != "" || seen.URL.Query().Get("api_key") != "" {
			t.Errorf("%s: the key reached the backend: %v %v", tc.name, seen.Header, seen.URL)
		}
	}
}

// TestConsumerCounts (in TestAPIKeys' wake): only authenticated requests
// count, by declared consumer.
func TestConsumerCounts(t *testing.T) {
	t.Parallel()
	stats := new(httpfilter.Stats)
	f, err := newFilter("keys", &apikeyv3.ApiKeyAuth{
		Credentials: []*apikeyv3.Credential{{Key: hashOf("k-acme"), Client: "acme"}},
		KeySources:  []*apikeyv3.KeySource{{Header: "x-api-key"}},
	}, httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	for _, key := range []string{"k-acme", "k-acme", "nope", ""} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-Api-Key", key)
		h.ServeHTTP(httptest.NewRecorder(), r, nil)
	}
	got := stats.Counters(httpfilter.StatConsumerRequests).Snapshot()
	if len(got) != 1 || got["apikey/acme"] != 2 {
		t.Errorf("consumer_requests = %v, want apikey/acme 2 only", got)
	}
	if d := stats.Counters(StatDenied).Snapshot(); d["invalid"] != 1 || d["missing"] != 1 {
		t.Errorf("api_key_auth_denied = %v", d)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []*apikeyv3.ApiKeyAuth{
		{Credentials: []*apikeyv3.Credential{{Key: "sha256:zz", Client: "a"}}, KeySources: []*apikeyv3.KeySource{{Header: "k"}}},
		{Credentials: []*apikeyv3.Credential{{Key: "k", Client: "a"}}},
		{KeySources: []*apikeyv3.KeySource{{Header: "k", Query: "q"}}},
	} {
		if _, err := compile(cfg); err == nil {
			t.Errorf("compile(%v) succeeded", cfg)
		}
	}
}

// TestForwardHeaderOnlyFromAKey: on a route whose per-route config requires
// nothing, the consumer header a client sent is removed.
func TestForwardHeaderOnlyFromAKey(t *testing.T) {
	t.Parallel()
	f, err := newFilter("keys", &apikeyv3.ApiKeyAuth{Forwarding: &apikeyv3.Forwarding{Header: "x-consumer"}},
		httpfilter.Env{Stats: new(httpfilter.Stats)})
	if err != nil {
		t.Fatal(err)
	}
	var seen *http.Request
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Consumer", "acme")
	f.Wrap(httpfilter.HandlerFunc(func(_ http.ResponseWriter, r *http.Request, _ *router.Route) { seen = r })).ServeHTTP(httptest.NewRecorder(), r, nil)
	if seen == nil || seen.Header.Get("X-Consumer") != "" {
		t.Errorf("X-Consumer reached the backend: %v", seen)
	}
}
