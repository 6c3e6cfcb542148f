package controlplane

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequireAdminBearerScheme: the admin token is accepted with the Bearer
// scheme in any case (RFC 9110 section 11.1), and only with it.
func TestRequireAdminBearerScheme(t *testing.T) {
	t.Parallel()
	cp := &ControlPlane{adminToken: "s3cret"}
	h := cp.requireAdmin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	tests := []struct {
		name          string
		authorization string
		want          int
	}{
		{"Bearer", "Bearer s3cret", http.StatusNoContent},
		{"lower case", "bearer s3cret", http.StatusNoContent},
		{"upper case", "BEARER s3cret", http.StatusNoContent},
		{"mixed case", "bEaReR s3cret", http.StatusNoContent},
		{"two spaces", "Bearer  s3cret", http.StatusNoContent},
		{"trailing space", "Bearer s3cret ", http.StatusNoContent},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"wrong token in lower case", "bearer nope", http.StatusUnauthorized},
		{"no credentials", "Bearer", http.StatusUnauthorized},
		{"empty credentials", "Bearer ", http.StatusUnauthorized},
		{"other scheme", "Basic s3cret", http.StatusUnauthorized},
		{"no space", "Bearers3cret", http.StatusUnauthorized},
		{"longer scheme", "Bearerx s3cret", http.StatusUnauthorized},
		{"token alone", "s3cret", http.StatusUnauthorized},
		{"missing", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/status", nil)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("Authorization %q: %d, want %d", tt.authorization, rec.Code, tt.want)
			}
		})
	}
}
