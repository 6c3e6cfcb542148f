package dataplane

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestAdminServesPprofToLoopbackOnly(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	registerPprof(mux)
	tests := []struct {
		remote string
		status int
	}{
		{"127.0.0.1:4000", http.StatusOK},
		{"[::1]:4000", http.StatusOK},
		{"[::ffff:127.0.0.1]:4000", http.StatusOK},
		{"10.0.0.7:4000", http.StatusForbidden},
		{"not-an-address", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.remote, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?debug=1", nil)
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Errorf("GET /debug/pprof/heap from %s: status %d, want %d", tc.remote, rec.Code, tc.status)
			}
		})
	}
}

func TestAdminAppHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		appHealth func() (bool, string)
		status    int
		body      string
	}{
		{"no probe", nil, http.StatusNotFound, "no app health probe"},
		{"healthy", func() (bool, string) { return true, "app 127.0.0.1:9001 healthy (TCP connect)" }, http.StatusOK, "app 127.0.0.1:9001 healthy (TCP connect)\n"},
		{"unhealthy", func() (bool, string) { return false, "app 127.0.0.1:9001 unreachable: connection refused" },
			http.StatusServiceUnavailable, "app 127.0.0.1:9001 unreachable: connection refused\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := New(Options{Node: &corev3.Node{Id: "n"}, XDSAddresses: []string{"127.0.0.1:1"}, Logger: slog.New(slog.DiscardHandler), AppHealth: tc.appHealth})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			p.adminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/app_health", nil))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("GET /app_health: %d %q, want %d %q", rec.Code, rec.Body.String(), tc.status, tc.body)
			}
		})
	}
}
