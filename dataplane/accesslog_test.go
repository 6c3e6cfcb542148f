package dataplane

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// withAccessLog makes the listener log each request to path with fields.
func withAccessLog(t *testing.T, path string, fields map[string]any) func(*snapshot) {
	return func(s *snapshot) {
		st, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := anypb.New(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{
			LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}})
		if err != nil {
			t.Fatal(err)
		}
		s.hcm.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg}}}
	}
}

type accessLogCounters struct {
	Files   int    `json:"files"`
	Written uint64 `json:"lines_written"`
	Dropped uint64 `json:"lines_dropped"`
}

func statsAccessLog(t *testing.T, p *Proxy) accessLogCounters {
	t.Helper()
	_, body, err := get(http.DefaultClient, "http://"+p.AdminAddr()+"/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		AccessLog accessLogCounters `json:"access_log"`
	}
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	return stats.AccessLog
}

// TestProxyLogsAsConfiguredOverXDS: a listener whose connection manager has
// access_log writes one JSON line per request to its file, counted in
// /stats; without it the file is closed and nothing more is written, its
// counters kept; an operator the proxy does not implement is NACKed,
// named.
func TestProxyLogsAsConfiguredOverXDS(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	backendA := backend(t, "a")
	path := filepath.Join(t.TempDir(), "access.log")
	fields := map[string]any{"code": "%RESPONSE_CODE%", "cluster": "%UPSTREAM_CLUSTER%"}
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withAccessLog(t, path, fields)}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")
	eventually(t, "lines written", func() bool {
		_, _, _ = get(http.DefaultClient, url)
		st := statsAccessLog(t, p)
		return st.Files == 1 && st.Written >= 2
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// waitServing's first requests may come before the listener's route
	// and cluster are in place (a 503 without a cluster); those served
	// are logged as such.
	if want := `{"cluster":"default/a:80","code":200}`; !slices.Contains(strings.Split(string(b), "\n"), want) {
		t.Errorf("no line %s in %q", want, b)
	}

	cp.set(t, config{version: "v2", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA}.build(t))
	var written uint64
	eventually(t, "access log closed", func() bool {
		st := statsAccessLog(t, p)
		written = st.Written
		return st.Files == 0 && st.Written >= 2
	})
	if b, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	size := len(b)
	for range 3 {
		if code, _, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK {
			t.Fatalf("request: %d %v", code, err)
		}
	}
	if b, err = os.ReadFile(path); err != nil || len(b) != size {
		t.Errorf("the file grew without an access log: %d bytes, were %d (%v)", len(b), size, err)
	}
	if st := statsAccessLog(t, p); st.Written != written {
		t.Errorf("lines written without an access log: %+v, were %d", st, written)
	}

	cp.set(t, config{version: "v3", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendA,
		mutate: withAccessLog(t, path, map[string]any{"x": "%UPSTREAM_TRANSPORT_FAILURE_REASON%"})}.build(t))
	eventually(t, "NACK of the listener", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return slices.ContainsFunc(cp.nacks, func(n *discoveryv3.DiscoveryRequest) bool {
			return n.GetTypeUrl() == resourcev3.ListenerType &&
				strings.Contains(n.GetErrorDetail().GetMessage(), "unknown command operator %UPSTREAM_TRANSPORT_FAILURE_REASON%")
		})
	})
}
