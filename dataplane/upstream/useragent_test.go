package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNoDefaultUserAgent: a request is sent with the User-Agent it has and
// none when it has none, on every path: the HTTP/1.1 fast path (no body),
// net/http's Transport (a body) and h2c.
func TestNoDefaultUserAgent(t *testing.T) {
	t.Parallel()
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		ua, ok := r.Header["User-Agent"]
		if !ok {
			_, _ = io.WriteString(w, "(none)")
			return
		}
		_, _ = io.WriteString(w, strings.Join(ua, ","))
	}))
	backend.Config.Protocols = new(http.Protocols)
	backend.Config.Protocols.SetHTTP1(true)
	backend.Config.Protocols.SetUnencryptedHTTP2(true)
	backend.Start()
	t.Cleanup(backend.Close)
	host, port := splitAddr(t, backend.Listener.Addr().String())
	h1 := mustCluster(t, staticCluster("h1", testEndpoint{addr: host, port: port}))
	h2 := mustCluster(t, withH2C(t, staticCluster("h2", testEndpoint{addr: host, port: port})))

	tests := []struct {
		name    string
		cluster *Cluster
		body    bool
		ua      []string // nil: no User-Agent field
		want    string
	}{
		{"fast path, none", h1, false, nil, "(none)"},
		{"fast path, kept", h1, false, []string{"curl/8.5"}, "curl/8.5"},
		{"transport, none", h1, true, nil, "(none)"},
		{"transport, kept", h1, true, []string{"curl/8.5"}, "curl/8.5"},
		{"h2c, none", h2, false, nil, "(none)"},
		{"h2c with a body, none", h2, true, nil, "(none)"},
		{"h2c, kept", h2, false, []string{"curl/8.5"}, "curl/8.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, _ := tt.cluster.Next()
			req := httptest.NewRequest(http.MethodPost, "http://"+ep+"/", nil)
			req.RequestURI = ""
			req.Body, req.ContentLength = nil, 0
			if tt.body {
				req.Body, req.ContentLength = io.NopCloser(strings.NewReader("hello")), 5
			}
			if tt.ua != nil {
				req.Header["User-Agent"] = tt.ua
			}
			resp, err := tt.cluster.RoundTrip(req, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != tt.want {
				t.Errorf("backend saw User-Agent %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSuppressDefaultUserAgentAllocations: a request with a User-Agent
// costs nothing; one without only the header entry.
func TestSuppressDefaultUserAgentAllocations(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "http://a/", nil)
	req.Header["User-Agent"] = []string{"curl/8.5"}
	if n := testing.AllocsPerRun(100, func() { suppressDefaultUserAgent(req) }); n != 0 {
		t.Errorf("%v allocations with a User-Agent, want 0", n)
	}
	if got, ok := req.Header["User-Agent"]; !ok || len(got) != 1 || got[0] != "curl/8.5" {
		t.Errorf("User-Agent changed to %q", got)
	}
}
