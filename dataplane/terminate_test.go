package dataplane

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestSelectChain: a server name selects the chain of its exact name, else
// of its longest wildcard suffix, else the chain without server names; a
// chain of application protocols (the ACME TLS-ALPN-01 challenge's) only
// when the client offers one of them, for its exact name.
func TestSelectChain(t *testing.T) {
	t.Parallel()
	chains := []terminateChain{
		{serverNames: []string{"shop.example.com"}},
		{serverNames: []string{"*.example.com"}},
		{serverNames: []string{"*.eu.example.com"}},
		{}, // default
		{serverNames: []string{"shop.example.com"}, appProtocols: []string{"acme-tls/1"}},
		{serverNames: []string{"new.example.com"}, appProtocols: []string{"acme-tls/1"}},
	}
	acme := []string{"acme-tls/1"}
	tests := []struct {
		name    string
		offered []string
		want    int
	}{
		{"shop.example.com", nil, 0},
		{"SHOP.example.com.", nil, 0},
		{"a.example.com", nil, 1},
		{"a.b.example.com", nil, 1},
		{"a.eu.example.com", nil, 2},
		{"example.com", nil, 3},
		{"other.org", nil, 3},
		{"", nil, 3},
		{"shop.example.com", []string{"h2", "http/1.1"}, 0},
		{"shop.example.com", acme, 4},
		{"new.example.com", acme, 5},
		{"new.example.com", []string{"h2"}, 1},
		{"a.example.com", acme, 1},
	}
	for _, tt := range tests {
		if got := selectChain(chains, tt.name, tt.offered); got != tt.want {
			t.Errorf("selectChain(%q, %q) = %d, want %d", tt.name, tt.offered, got, tt.want)
		}
	}
	if got := selectChain(chains[:3], "other.org", nil); got != -1 {
		t.Errorf("without a default chain: %d, want -1", got)
	}
	if got := selectChain(chains[4:], "shop.example.com", []string{"h2"}); got != -1 {
		t.Errorf("only challenge chains, no acme-tls/1 offered: %d, want -1", got)
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
