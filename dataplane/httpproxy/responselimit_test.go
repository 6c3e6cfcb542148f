package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/filters/responselimit"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// TestResponseLimitLogged: a response the response limit filter answers
// in its stead (its Content-Length over the limit) is 502 to the client
// and logged with the filter's details, not as a client that went away.
func TestResponseLimitLogged(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 100)))
	})
	limit, err := responselimit.Factory().New("limit", &structpb.Struct{Fields: map[string]*structpb.Value{
		"max_response_bytes": structpb.NewNumberValue(8)}}, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "access.log")
	logs, w := accessLogTo(t, path, testFields)
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:     table(t, &routev3.Route{Name: "big", Match: prefix("/"), Action: forwardTo("A")}),
		Clusters:   map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
		Filters:    []httpfilter.Filter{limit},
		AccessLogs: logs,
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://shop/big", nil))
	if rec.Code != http.StatusBadGateway || rec.Body.String() != "response body over the route's limit of 8 bytes" {
		t.Errorf("%d %q, want 502 naming the limit", rec.Code, rec.Body.String())
	}
	lines := readLines(t, w, path)
	if len(lines) != 1 || lines[0]["response_code"] != 502.0 || lines[0]["response_code_details"] != responselimit.DetailsTooLarge ||
		lines[0]["response_flags"] != "-" {
		t.Errorf("access log %v, want one 502 line with details %s and no flag", lines, responselimit.DetailsTooLarge)
	}
}
