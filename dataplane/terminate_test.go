package dataplane

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestSelectChain: a server name selects the chain of its exact name, else
// of its longest wildcard suffix, else the chain without server names.
func TestSelectChain(t *testing.T) {
	t.Parallel()
	chains := []terminateChain{
		{serverNames: []string{"shop.example.com"}},
		{serverNames: []string{"*.example.com"}},
		{serverNames: []string{"*.eu.example.com"}},
		{}, // default
	}
	tests := []struct {
		name string
		want int
	}{
		{"shop.example.com", 0},
		{"SHOP.example.com.", 0},
		{"a.example.com", 1},
		{"a.b.example.com", 1},
		{"a.eu.example.com", 2},
		{"example.com", 3},
		{"other.org", 3},
		{"", 3},
	}
	for _, tt := range tests {
		if got := selectChain(chains, tt.name); got != tt.want {
			t.Errorf("selectChain(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := selectChain(chains[:3], "other.org"); got != -1 {
		t.Errorf("without a default chain: %d, want -1", got)
	}
}

// TestMisdirected: a request whose Host selects another chain than its
// connection's SNI is answered 421; the same chain, or no SNI, passes.
func TestMisdirected(t *testing.T) {
	t.Parallel()
	chains := []terminateChain{
		{serverNames: []string{"second.example.org"}},
		{serverNames: []string{"*.wildcard.org"}},
		{serverNames: []string{"fourth.wildcard.org"}},
		{},
	}
	h := misdirected(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }), chains)
	tests := []struct {
		sni, host string
		want      int
	}{
		{"second.example.org", "second.example.org:8443", http.StatusTeapot},
		{"second.example.org", "example.org", http.StatusMisdirectedRequest},
		{"second.example.org", "unknown.org", http.StatusMisdirectedRequest},
		{"example.org", "unknown.org", http.StatusTeapot}, // both the default chain
		{"third.wildcard.org", "fifth.wildcard.org", http.StatusTeapot},
		{"third.wildcard.org", "fourth.wildcard.org", http.StatusMisdirectedRequest},
		{"fourth.wildcard.org", "fifth.wildcard.org", http.StatusMisdirectedRequest},
		{"unknown.org", "example.org", http.StatusTeapot},
		{"", "second.example.org", http.StatusTeapot}, // no SNI: not checked
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "https://"+tt.host+"/", nil)
		r.TLS = &tls.ConnectionState{ServerName: tt.sni}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("SNI %q, Host %q: %d, want %d", tt.sni, tt.host, w.Code, tt.want)
		}
	}
}
