package grpcweb

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshgate/meshgate/dataplane/router"
)

// FuzzGRPCWeb sends arbitrary bytes as a gRPC-Web request body (text or
// binary, the first byte chooses) and answers them back as gRPC frames:
// never a panic; a text body that is base64 in groups of four reaches the
// upstream decoded, and any response is framed whole.
func FuzzGRPCWeb(f *testing.F) {
	f.Add([]byte{1, 'A', 'A', 'A', 'A'})
	f.Add(append([]byte{1}, base64.StdEncoding.EncodeToString(frame(0, "hi"))...))
	f.Add(append([]byte{0}, frame(0, "hello")...))
	f.Add([]byte{1, '=', '=', '=', '='})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		text, body := data[0]&1 == 1, data[1:]
		var received []byte
		var readErr error
		h := wrap(t, httpHandler(func(w http.ResponseWriter, r *http.Request) {
			received, readErr = io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/grpc")
			_, _ = w.Write(body) // not framed: the encoder must cope
			w.Header()[http.TrailerPrefix+"Grpc-Status"] = []string{"0"}
		}))
		req := httptest.NewRequest("POST", "/s/m", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/grpc-web")
		if text {
			req.Header.Set("Content-Type", "application/grpc-web-text")
			req.Header.Set("Accept", "application/grpc-web-text")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !text && (readErr != nil || !bytes.Equal(received, body)) {
			t.Fatalf("binary body changed: %q -> %q (%v)", body, received, readErr)
		}
		if text && readErr == nil {
			var want []byte
			for i := 0; i+4 <= len(body); i += 4 {
				dst := make([]byte, 3)
				n, _ := base64.StdEncoding.Decode(dst, body[i:i+4])
				want = append(want, dst[:n]...)
			}
			if !bytes.Equal(received, want) {
				t.Fatalf("text body %q decoded as %q, want %q", body, received, want)
			}
		}
	})
}

// httpHandler adapts a plain handler to the filter chain's.
type httpHandler func(w http.ResponseWriter, r *http.Request)

func (f httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ *router.Route) { f(w, r) }
