package e2e

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestTrafficPolicyResponseLimit: a TrafficPolicy bodyLimits.
// maxResponseBytes on a Service gives a response whose Content-Length is
// over the limit 502 naming the limit, aborts one without a length
// (chunked) that runs over it, so that the client sees a broken response
// and never a short complete one, and passes responses within it
// unchanged; the same at the gateway and at a sidecar. (An abort may come
// before the response head left the proxy: the client then sees the
// connection closed without a response.)
func TestTrafficPolicyResponseLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	// GET /bytes?n=N answers N bytes, with a Content-Length unless
	// chunked=1 (then flushed in 1 KiB writes).
	startTestBackend(c, "big", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/bytes" {
			return false
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		chunked := r.URL.Query().Get("chunked") == "1"
		w.Header().Set("X-Backend", "big")
		if !chunked {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		w.WriteHeader(http.StatusOK)
		chunk := strings.Repeat("x", 1024)
		for left := n; left > 0; left -= len(chunk) {
			if _, err := io.WriteString(w, chunk[:min(left, len(chunk))]); err != nil {
				return true
			}
			if chunked {
				http.NewResponseController(w).Flush() //nolint:errcheck // the proxy may have gone
			}
		}
		return true
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("big"), meshServices("client"), serviceOf("big", "big"),
		trafficPolicy("big-limits", "big", `
  bodyLimits: {maxResponseBytes: 4096}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "big") {
		for _, tc := range []struct {
			n          int
			chunked    bool
			wantStatus int  // 0: the response is cut short
			wantLimit  bool // the body is the proxy's, naming the limit
		}{
			{n: 4096, wantStatus: http.StatusOK},
			{n: 4096, chunked: true, wantStatus: http.StatusOK},
			{n: 4097, wantStatus: http.StatusBadGateway, wantLimit: true},
			{n: 1 << 20, wantStatus: http.StatusBadGateway, wantLimit: true},
			{n: 256 << 10, chunked: true},
		} {
			path := "/bytes?n=" + strconv.Itoa(tc.n)
			if tc.chunked {
				path += "&chunked=1"
			}
			req, err := http.NewRequest(http.MethodGet, e.base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range e.headers {
				if k, v, _ := strings.Cut(h, ":"); strings.EqualFold(k, "host") {
					req.Host = strings.TrimSpace(v)
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				// The abort came before the head left the proxy (the
				// body's first read was already over the limit): the
				// connection closed without a response, as broken as a
				// truncated one.
				if tc.wantStatus == 0 {
					continue
				}
				t.Fatalf("%s: GET %s: %v", e.name, path, err)
			}
			body, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tc.wantStatus == 0:
				if resp.StatusCode != http.StatusOK || !errors.Is(readErr, io.ErrUnexpectedEOF) || len(body) > 4096 {
					t.Errorf("%s: GET %s: %d, %d bytes, read error %v; want 200 cut short (unexpected EOF) after at most 4096 bytes",
						e.name, path, resp.StatusCode, len(body), readErr)
				}
			case resp.StatusCode != tc.wantStatus || readErr != nil:
				t.Errorf("%s: GET %s: %d (read error %v), want %d", e.name, path, resp.StatusCode, readErr, tc.wantStatus)
			case tc.wantLimit:
				if want := "response body over the route's limit of 4096 bytes"; string(body) != want || resp.Header.Get("X-Backend") != "" {
					t.Errorf("%s: GET %s: body %q, headers %v; want %q, no upstream header", e.name, path, body, resp.Header, want)
				}
			default:
				if len(body) != tc.n || resp.Header.Get("X-Backend") != "big" {
					t.Errorf("%s: GET %s: %d bytes, headers %v; want the backend's %d", e.name, path, len(body), resp.Header, tc.n)
				}
			}
		}
	}
}
