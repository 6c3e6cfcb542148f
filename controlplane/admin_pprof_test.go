package controlplane

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminPprofRequiresToken(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	tests := []struct {
		name     string
		path     string
		token    string
		wantCode int
		wantBody string
	}{
		{name: "index without token", path: "/debug/pprof/", wantCode: http.StatusUnauthorized},
		{name: "heap with a wrong token", path: "/debug/pprof/heap", token: "nope", wantCode: http.StatusUnauthorized},
		{name: "index", path: "/debug/pprof/", token: r.adminToken, wantCode: http.StatusOK, wantBody: "goroutine"},
		{name: "heap", path: "/debug/pprof/heap?debug=1", token: r.adminToken, wantCode: http.StatusOK, wantBody: "heap profile"},
		{name: "cmdline", path: "/debug/pprof/cmdline", token: r.adminToken, wantCode: http.StatusOK},
	}
	for _, tt := range tests {
		code, body := r.do(t, http.MethodGet, tt.path, tt.token, "")
		if code != tt.wantCode || !strings.Contains(string(body), tt.wantBody) {
			t.Errorf("%s: GET %s = %d %.200s, want %d containing %q", tt.name, tt.path, code, body, tt.wantCode, tt.wantBody)
		}
	}
}
