package grpcweb

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	grpcwebv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// frame is one gRPC (or gRPC-Web) frame.
func frame(flag byte, payload string) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// seen is what the upstream handler of a test received.
type seen struct {
	header http.Header
	body   []byte
	length int64
}

// grpcUpstream answers as a gRPC server: the frames of messages, then
// grpc-status 0 and grpc-message as trailers, after recording the request.
func grpcUpstream(got *seen, messages ...string) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
		got.header = r.Header.Clone()
		got.length = r.ContentLength
		got.body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Content-Length", "999") // removed: the length changes
		w.WriteHeader(http.StatusOK)
		for _, m := range messages {
			_, _ = w.Write(frame(0, m))
			w.(http.Flusher).Flush()
		}
		w.Header()[http.TrailerPrefix+"Grpc-Status"] = []string{"0"}
		w.Header()[http.TrailerPrefix+"Grpc-Message"] = []string{"ok"}
	})
}

func wrap(t *testing.T, next httpfilter.Handler) http.Handler {
	t.Helper()
	f, err := Factory().New("envoy.filters.http.grpc_web", &grpcwebv3.GrpcWeb{}, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Wrap(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r, nil) })
}

func TestGRPCWebTranslatesRequestsAndResponses(t *testing.T) {
	t.Parallel()
	request := frame(0, "hello")
	trailers := string(frame(trailerFlag, "grpc-message:ok\r\ngrpc-status:0\r\n"))
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name        string
		contentType string
		accept      string
		body        string
		messages    []string
		wantType    string
		wantBody    string
	}{
		{
			name: "binary unary", contentType: "application/grpc-web+proto", body: string(request),
			messages: []string{"world"}, wantType: "application/grpc-web+proto",
			wantBody: string(frame(0, "world")) + trailers,
		},
		{
			name: "binary server streaming", contentType: "application/grpc-web", body: string(request),
			messages: []string{"one", "two", ""}, wantType: "application/grpc-web+proto",
			wantBody: string(frame(0, "one")) + string(frame(0, "two")) + string(frame(0, "")) + trailers,
		},
		{
			// Each message padded on its own, as grpc-web clients send them.
			name: "text", contentType: "application/grpc-web-text", accept: "application/grpc-web-text",
			body:     b64(frame(0, "he")) + b64(frame(0, "llo")),
			messages: []string{"w", "orld"}, wantType: "application/grpc-web-text+proto",
			wantBody: b64(frame(0, "w")) + b64(frame(0, "orld")) + b64([]byte(trailers)),
		},
		{
			name: "text request, binary response", contentType: "application/grpc-web-text+proto", body: b64(request),
			messages: []string{"x"}, wantType: "application/grpc-web+proto",
			wantBody: string(frame(0, "x")) + trailers,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got seen
			req := httptest.NewRequest("POST", "/pkg.Svc/Method", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.contentType)
			req.Header.Set("Content-Length", "12")
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			rec := httptest.NewRecorder()
			wrap(t, grpcUpstream(&got, tc.messages...)).ServeHTTP(rec, req)
			if got.header.Get("Content-Type") != "application/grpc" || got.header.Get("Te") != "trailers" ||
				got.header.Get("Grpc-Accept-Encoding") != "identity" || got.header.Get("Content-Length") != "" || got.length != -1 {
				t.Errorf("upstream request head: %v length %d", got.header, got.length)
			}
			wantReq := string(request)
			if strings.HasPrefix(tc.name, "text") && tc.name == "text" {
				wantReq = string(frame(0, "he")) + string(frame(0, "llo"))
			}
			if string(got.body) != wantReq {
				t.Errorf("upstream request body %q, want %q", got.body, wantReq)
			}
			if rec.Code != 200 || rec.Header().Get("Content-Type") != tc.wantType || rec.Header().Get("Content-Length") != "" {
				t.Errorf("response head: %d %v", rec.Code, rec.Header())
			}
			if rec.Body.String() != tc.wantBody {
				t.Errorf("response body\n%q, want\n%q", rec.Body.String(), tc.wantBody)
			}
			for k := range rec.Header() {
				if strings.HasPrefix(k, http.TrailerPrefix) {
					t.Errorf("trailer %s left as an HTTP trailer", k)
				}
			}
		})
	}
}

func TestGRPCWebLeavesOtherRequestsAlone(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"application/grpc", "application/json", "application/grpc-web+json", ""} {
		var got seen
		req := httptest.NewRequest("POST", "/x", strings.NewReader("body"))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		rec := httptest.NewRecorder()
		wrap(t, grpcUpstream(&got, "m")).ServeHTTP(rec, req)
		if got.header.Get("Content-Type") != ct || got.header.Get("Te") != "" || string(got.body) != "body" {
			t.Errorf("%q: upstream got %v %q", ct, got.header, got.body)
		}
		if rec.Header().Get("Content-Type") != "application/grpc" || rec.Header()[http.TrailerPrefix+"Grpc-Status"] == nil {
			t.Errorf("%q: response changed: %v", ct, rec.Header())
		}
	}
}

// TestGRPCWebTranslatesNonGRPCResponses: an error page (a local reply)
// becomes grpc-status and grpc-message, with its HTTP status and no body;
// a trailers-only gRPC response passes as it is.
func TestGRPCWebTranslatesNonGRPCResponses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		upstream   httpfilter.HandlerFunc
		wantCode   int
		wantStatus string
		wantMsg    string
	}{
		{"503 no healthy upstream", func(w http.ResponseWriter, _ *http.Request, rt *router.Route) {
			httpfilter.LocalReply(w, rt, http.StatusServiceUnavailable, "no healthy upstream")
		}, 503, "14", "no healthy upstream"},
		{"403 with control bytes", func(w http.ResponseWriter, _ *http.Request, rt *router.Route) {
			httpfilter.LocalReply(w, rt, http.StatusForbidden, "RBAC: access denied\n100%")
		}, 403, "7", "RBAC: access denied%0A100%25"},
		{"long body cut at 16 KiB", func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, strings.Repeat("x", 20<<10))
		}, 500, "2", strings.Repeat("x", 16<<10)},
		{"trailers-only gRPC", func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			w.Header().Set("Grpc-Message", "not found")
			w.WriteHeader(http.StatusOK)
		}, 200, "5", "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest("POST", "/pkg.Svc/Method", bytes.NewReader(frame(0, "")))
			req.Header.Set("Content-Type", "application/grpc-web+proto")
			rec := httptest.NewRecorder()
			wrap(t, tc.upstream).ServeHTTP(rec, req)
			h := rec.Header()
			if rec.Code != tc.wantCode || h.Get("Grpc-Status") != tc.wantStatus || h.Get("Grpc-Message") != tc.wantMsg ||
				h.Get("Content-Type") != "application/grpc-web+proto" || rec.Body.Len() != 0 {
				t.Errorf("got %d %v body %q", rec.Code, h, rec.Body.String())
			}
		})
	}
}

func TestGRPCWebRefusesBadBase64(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"AAAA!!!!", "AAAAAA"} {
		var got seen
		req := httptest.NewRequest("POST", "/pkg.Svc/Method", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/grpc-web-text")
		rec := httptest.NewRecorder()
		wrap(t, httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
			if _, err := io.ReadAll(r.Body); err != nil {
				httpfilter.LocalReply(w, rt, http.StatusBadGateway, "upstream reset")
				return
			}
			grpcUpstream(&got).ServeHTTP(w, r, rt)
		})).ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || rec.Header().Get("Grpc-Status") != "13" || rec.Header().Get("Grpc-Message") != bodyBadBase64 {
			t.Errorf("%q: got %d %v", body, rec.Code, rec.Header())
		}
	}
}

// TestFrameEncoderSplitsAnywhere: the base64 of a stream of frames is the
// same however the stream is cut into writes.
func TestFrameEncoderSplitsAnywhere(t *testing.T) {
	t.Parallel()
	stream := append(append(frame(0, "a"), frame(0, "")...), frame(1, "hello, world")...)
	want := base64.StdEncoding.EncodeToString(frame(0, "a")) + base64.StdEncoding.EncodeToString(frame(0, "")) +
		base64.StdEncoding.EncodeToString(frame(1, "hello, world"))
	for cut1 := 0; cut1 <= len(stream); cut1++ {
		for cut2 := cut1; cut2 <= len(stream); cut2++ {
			var e frameEncoder
			var out []byte
			for _, part := range [][]byte{stream[:cut1], stream[cut1:cut2], stream[cut2:]} {
				out = append(out, e.encode(part)...)
			}
			if string(out) != want {
				t.Fatalf("cuts %d,%d: %q, want %q", cut1, cut2, out, want)
			}
		}
	}
}
