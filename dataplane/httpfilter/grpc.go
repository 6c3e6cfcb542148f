package httpfilter

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meshgate/meshgate/dataplane/router"
)

// gRPC status codes of the proxy's own answers (google.golang.org/grpc/codes).
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// Reply answers r locally: a gRPC call (content-type application/grpc)
// with its gRPC status (GRPCLocalReply), anything else as LocalReply does.
func Reply(w http.ResponseWriter, r *http.Request, rt *router.Route, status int, body string) {
	if router.IsGRPC(r) {
		GRPCLocalReply(w, rt, status, body)
		return
	}
	LocalReply(w, rt, status, body)
}

// GRPCLocalReply answers a gRPC call with the gRPC status of the HTTP
// status the proxy would have answered (as Envoy maps them, except that a
// timeout, 504 or 408, is DEADLINE_EXCEEDED): HTTP 200, content-type
// application/grpc, grpc-status and grpc-message (the text without its
// final newline, percent-encoded as gRPC requires) in a trailers-only
// response. The route's response
// header mutations apply.
func GRPCLocalReply(w http.ResponseWriter, rt *router.Route, status int, message string) {
	header := w.Header()
	header["Content-Type"] = []string{"application/grpc"}
	header["Grpc-Status"] = []string{strconv.Itoa(GRPCStatus(status))}
	if message = strings.TrimSpace(message); message != "" {
		header["Grpc-Message"] = []string{grpcMessage(message)}
	}
	delete(header, "Content-Length")
	if rt != nil {
		rt.ApplyResponseHeaders(header)
	}
	w.WriteHeader(http.StatusOK)
}

// GRPCStatus is the gRPC status code of an HTTP status of a local reply.
func GRPCStatus(httpStatus int) int {
	switch httpStatus {
	case http.StatusBadRequest:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound:
		return grpcUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return grpcUnavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return grpcDeadlineExceeded
	}
	return grpcUnknown
}

// grpcMessage percent-encodes a grpc-message value (the gRPC spec: bytes
// outside printable ASCII, and %).
func grpcMessage(s string) string {
	if !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c > 0x7e || c == '%' }) {
		return s
	}
	return strings.ReplaceAll(url.PathEscape(s), "+", "%2B")
}
