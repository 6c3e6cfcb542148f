package router

import (
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// TestVirtualHostResponseHeaders: a virtual host's response_headers_to_add
// (HSTS at an HTTPS listener) apply to the responses of each of its routes,
// after the route's own; another virtual host's routes do not get them.
func TestVirtualHostResponseHeaders(t *testing.T) {
	t.Parallel()
	overwrite := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
	}
	secure := vhost("secure", []string{"shop.test"}, route(prefixMatch("/"), "web"))
	secure.ResponseHeadersToAdd = []*corev3.HeaderValueOption{overwrite("Strict-Transport-Security", "max-age=60")}
	secure.Routes[0].ResponseHeadersToAdd = []*corev3.HeaderValueOption{overwrite("Strict-Transport-Security", "max-age=1"), overwrite("X-Route", "r")}
	plain := vhost("plain", []string{"*"}, route(prefixMatch("/"), "web"))
	tbl := mustCompile(t, rcWith(secure, plain))

	for _, tc := range []struct {
		host string
		want http.Header
	}{
		{"shop.test", http.Header{"Strict-Transport-Security": {"max-age=60"}, "X-Route": {"r"}, "Server": {"upstream"}}},
		{"other.test", http.Header{"Server": {"upstream"}}},
	} {
		rt := tbl.Match(newRequest(http.MethodGet, "/", tc.host))
		if rt == nil {
			t.Fatalf("%s: no route", tc.host)
		}
		h := http.Header{"Server": {"upstream"}, "Strict-Transport-Security": {"max-age=5"}}
		if tc.host != "shop.test" {
			h = http.Header{"Server": {"upstream"}}
		}
		rt.ApplyResponseHeaders(h)
		if !equalHeaders(h, tc.want) {
			t.Errorf("%s: response headers = %v, want %v", tc.host, h, tc.want)
		}
	}
}
