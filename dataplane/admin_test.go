package dataplane

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
