package httpfilter

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReplyGRPC: a local reply to a gRPC call is HTTP 200 with the gRPC
// status of the HTTP status (timeouts DEADLINE_EXCEEDED, RBAC
// PERMISSION_DENIED, no route UNIMPLEMENTED, no upstream UNAVAILABLE) and
// the message percent-encoded; any other request gets the text reply.
func TestReplyGRPC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		contentType string
		status      int
		body        string
		wantStatus  int
		wantGRPC    string
		wantMessage string
	}{
		{"application/grpc", http.StatusServiceUnavailable, "no healthy upstream", 200, "14", "no healthy upstream"},
		{"application/grpc+proto", http.StatusGatewayTimeout, "upstream request timeout", 200, "4", "upstream request timeout"},
		{"application/grpc", http.StatusForbidden, "RBAC: access denied", 200, "7", "RBAC: access denied"},
		{"application/grpc", http.StatusNotFound, "", 200, "12", ""},
		{"application/grpc", http.StatusBadGateway, "100% broken\n", 200, "14", "100%25%20broken"},
		{"application/grpc", http.StatusInternalServerError, "x", 200, "2", "x"},
		{"application/json", http.StatusServiceUnavailable, "no healthy upstream", 503, "", ""},
		{"application/grpc-web", http.StatusForbidden, "RBAC: access denied", 403, "", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/pkg.Svc/Call", nil)
		r.Header.Set("Content-Type", tt.contentType)
		w := httptest.NewRecorder()
		Reply(w, r, nil, tt.status, tt.body)
		if w.Code != tt.wantStatus || w.Header().Get("Grpc-Status") != tt.wantGRPC || w.Header().Get("Grpc-Message") != tt.wantMessage {
			t.Errorf("%s %d: got %d grpc-status %q grpc-message %q; want %d %q %q", tt.contentType, tt.status,
				w.Code, w.Header().Get("Grpc-Status"), w.Header().Get("Grpc-Message"), tt.wantStatus, tt.wantGRPC, tt.wantMessage)
		}
		if tt.wantGRPC != "" && (w.Header().Get("Content-Type") != "application/grpc" || w.Body.Len() != 0) {
			t.Errorf("%s %d: content-type %q body %q; want application/grpc, no body", tt.contentType, tt.status, w.Header().Get("Content-Type"), w.Body)
		}
	}
}
