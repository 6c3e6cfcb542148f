package httpproxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestFullDuplexStreamsBothWays: over HTTP/2 the response head reaches the
// client while its request body is still streaming, and each piece of the
// request the backend echoes comes back before the client sends the next
// (the exchange of gRPC bidirectional streams): neither body is held until
// the other ends.
func TestFullDuplexStreamsBothWays(t *testing.T) {
	t.Parallel()
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				_ = http.NewResponseController(w).Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	enableH2C(backend.Config)
	backend.Start()
	t.Cleanup(backend.Close)
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", true, addrOf(backend))},
	}, true)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing of the body is sent before the head comes back.
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatalf("no response head while the request body is open: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("%s %d", resp.Proto, resp.StatusCode)
	}
	back := make([]byte, 100_000)
	for i := range 5 {
		piece := bytes.Repeat([]byte{byte('a' + i)}, len(back))
		if _, err := pw.Write(piece); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		if _, err := io.ReadFull(resp.Body, back); err != nil || !bytes.Equal(back, piece) {
			t.Fatalf("piece %d: echo %v", i, err)
		}
	}
}
