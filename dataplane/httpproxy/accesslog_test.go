package httpproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// testFields are the control plane's default access-log fields.
var testFields = map[string]any{
	"start_time": "%START_TIME%", "trace_id": "%TRACE_ID%", "route": "%ROUTE_NAME%",
	"upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
	"method": "%REQ(:METHOD)%", "authority": "%REQ(:AUTHORITY)%", "path": "%REQ(:PATH)%",
	"protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"denied_by":             "%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%",
	"bytes_received":        "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%",
	"upstream_duration": "%RESPONSE_DURATION%", "peer": "%DOWNSTREAM_PEER_URI_SAN%",
	"downstream_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
	"role":               "sidecar", "request": "%REQ(:METHOD)% %REQ(:PATH)% %RESP(X-Missing)%",
}

// accessLogTo returns the access logs of one file access logger writing
// fields to path, and its Writer.
func accessLogTo(t testing.TB, path string, fields map[string]any) ([]accesslog.Log, *accesslog.Writer) {
	t.Helper()
	st, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := anypb.New(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}})
	if err != nil {
		t.Fatal(err)
	}
	settings, err := accesslog.Parse([]*accesslogv3.AccessLog{{Name: accesslog.LoggerName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := accesslog.NewWriter(path, accesslog.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return []accesslog.Log{{Settings: settings[0], Writer: w}}, w
}

// readLines closes w and returns the JSON lines of path.
func readLines(t *testing.T, w *accesslog.Writer, path string) []map[string]any {
	t.Helper()
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestAccessLogLines: with an access log, each request is one JSON line
// with Envoy's command operators' values: a forwarded request names its
// route, upstream and sizes; a request with no route is NR, to a cluster
// with no endpoint UH, to a dead endpoint UF, with its status and
// details; a value that is not there is null (or "-" inside a string).
func TestAccessLogLines(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("hello"))
	})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	path := filepath.Join(t.TempDir(), "access.log")
	logs, w := accessLogTo(t, path, testFields)
	h := NewHandler(nil)
	h.Store(&Config{
		Routes: table(t,
			&routev3.Route{Name: "orders", Match: prefix("/orders"), Action: forwardTo("A")},
			&routev3.Route{Name: "empty", Match: prefix("/empty"), Action: forwardTo("E")},
			&routev3.Route{Name: "dead", Match: prefix("/dead"), Action: forwardTo("D")}),
		Clusters: map[string]*upstream.Cluster{
			"A": clusterFor(t, "A", false, addrOf(backend)),
			"E": clusterFor(t, "E", false),
			"D": clusterFor(t, "D", false, deadAddr),
		},
		AccessLogs: logs,
	})
	for _, target := range []string{"/orders/1?x=1", "/nothing", "/empty", "/dead"} {
		req := httptest.NewRequest("POST", "http://shop"+target, strings.NewReader("12345678"))
		req.RemoteAddr = "192.0.2.7:4321"
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	lines := readLines(t, w, path)
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	want := []map[string]any{
		{"route": "orders", "upstream_host": addrOf(backend), "upstream_cluster": "A", "method": "POST", "authority": "shop",
			"path": "/orders/1?x=1", "protocol": "HTTP/1.1", "response_code": 202.0, "response_flags": "-",
			"response_code_details": "via_upstream", "bytes_received": 8.0, "bytes_sent": 5.0,
			"downstream_address": "192.0.2.7", "role": "sidecar", "trace_id": nil, "denied_by": nil, "peer": nil,
			"request": "POST /orders/1?x=1 -"},
		{"route": nil, "upstream_host": nil, "response_code": 404.0, "response_flags": "NR", "response_code_details": "route_not_found",
			"bytes_received": 0.0, "upstream_duration": nil},
		{"route": "empty", "upstream_cluster": nil, "response_code": 503.0, "response_flags": "UH", "response_code_details": "no_healthy_upstream"},
		{"route": "dead", "upstream_host": deadAddr, "upstream_cluster": "D", "response_code": 503.0, "response_flags": "UF",
			"response_code_details": "upstream_reset_before_response_started{connection_failure}", "upstream_duration": nil},
	}
	for i, line := range lines {
		for k, v := range want[i] {
			if got, ok := line[k]; !ok || got != v {
				t.Errorf("line %d: %s = %#v, want %#v", i, k, got, v)
			}
		}
		if len(line) != len(testFields) {
			t.Errorf("line %d: %d fields, want %d", i, len(line), len(testFields))
		}
		if s, _ := line["start_time"].(string); len(s) != len("2006-01-02T15:04:05.000Z") {
			t.Errorf("line %d: start_time %q", i, s)
		}
		if _, ok := line["duration"].(float64); !ok {
			t.Errorf("line %d: duration %#v", i, line["duration"])
		}
	}
	if _, ok := lines[0]["upstream_duration"].(float64); !ok {
		t.Errorf("upstream_duration %#v, want a number", lines[0]["upstream_duration"])
	}
}

// BenchmarkProxyAccessLog is BenchmarkProxy's request with the access log
// on (the default fields, to a file): the cost of logging against
// BenchmarkProxy, where there is none.
func BenchmarkProxyAccessLog(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("hello, world\n"))
	})
	logs, _ := accessLogTo(b, filepath.Join(b.TempDir(), "access.log"), testFields)
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:     table(b, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters:   map[string]*upstream.Cluster{"A": clusterFor(b, "A", false, addrOf(backend))},
		AccessLogs: logs,
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "http://bench.local/path?x=1", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}
