package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/internal/testutil"
	"github.com/meshgate/meshgate/policy"
)

const serviceYAML = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: %s
spec:
  ports:
    - {port: 80}
  endpoints:
    - {address: 127.0.0.1:21011}
`

// invalidYAML stops parsing: nothing of its file can be read.
const invalidYAML = `apiVersion: meshgate.dev/v1alpha1
kind: [
`

// writeAtomically replaces path the way editors do: write a temp file, rename.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type running struct {
	xds, admin net.Addr
	dataDir    string
	adminToken string
}

func start(t *testing.T, paths ...string) running {
	t.Helper()
	return startWith(t, Options{ConfigPaths: paths})
}

// startWith runs a control plane with opts on free loopback ports, a
// temporary data directory and a 20 ms debounce (unless opts says).
func startWith(t *testing.T, opts Options) running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan running, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	opts.XDSAddress, opts.AdminAddress, opts.DataDir = "127.0.0.1:0", "127.0.0.1:0", dataDir
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	opts.OnReady = func(x, a net.Addr) { ready <- running{xds: x, admin: a, dataDir: dataDir} }
	go func() {
		done <- Run(ctx, opts)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case r := <-ready:
		tok, err := os.ReadFile(filepath.Join(dataDir, AdminTokenFile))
		if err != nil {
			t.Fatalf("admin token: %v", err)
		}
		r.adminToken = strings.TrimSpace(string(tok))
		return r
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	return running{}
}

// get GETs path from the admin API with the admin token.
func (r running) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	return r.do(t, http.MethodGet, path, r.adminToken, "")
}

// do calls the admin API with bearer token (none when empty) and body.
func (r running) do(t *testing.T, method, path, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+r.admin.String()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func status(t *testing.T, r running) Status {
	t.Helper()
	code, body := r.get(t, "/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /status: %v: %s", err, body)
	}
	return st
}

// waitStatus polls /status until cond holds.
func waitStatus(t *testing.T, r running, what string, cond func(Status) bool) Status {
	t.Helper()
	var st Status
	testutil.Eventually(t, 30*time.Second, what, func() error {
		if st = status(t, r); !cond(st) {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	return st
}

func TestReloadAndReject(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	if code, body := r.do(t, http.MethodGet, "/healthz", "", ""); code != 200 || string(body) != "ok" {
		t.Errorf("GET /healthz = %d %q", code, body)
	}
	first := waitStatus(t, r, "the initial load", func(s Status) bool { return s.Version != "" && !s.LastReload.IsZero() })
	if first.LastError != "" {
		t.Fatalf("initial load error: %s", first.LastError)
	}

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "payments"))
	second := waitStatus(t, r, "a new version", func(s Status) bool { return s.Version != first.Version })

	// An invalid Service is rejected; its last good version serves.
	writeAtomically(t, path, strings.ReplaceAll(strings.ReplaceAll(serviceYAML, "%s", "payments"), "port: 80", "port: 0"))
	rejected := waitStatus(t, r, "the rejected resource", func(s Status) bool { return s.LastError != "" })
	if rejected.Version != second.Version {
		t.Errorf("model version after a rejected resource = %s, want %s: its last good version serves", rejected.Version, second.Version)
	}
	if rejected.RejectedResources != 1 || len(rejected.Errors) != 1 {
		t.Errorf("after a rejected resource: %d rejected, errors %q; want 1, 1", rejected.RejectedResources, rejected.Errors)
	}
	if !strings.Contains(rejected.LastError, "policy.yaml:7") {
		t.Errorf("lastError = %q, want it to name the file and line", rejected.LastError)
	}
	code, body := r.do(t, http.MethodGet, "/resources/svc/default/payments", r.adminToken, "")
	var res policy.ResourceStatus
	if err := json.Unmarshal(body, &res); code != http.StatusOK || err != nil || res.State != policy.StateLastGood {
		t.Errorf("GET /resources/svc/default/payments: %d %s", code, body)
	}
	if spec, _ := json.Marshal(res.Object.Spec); !strings.Contains(string(spec), `"port":0`) {
		t.Errorf("resource spec %s, want the spec as written now", spec)
	}
	code, body = r.do(t, http.MethodGet, "/resources?kind=Gateway", r.adminToken, "")
	var list Resources
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || list.Items == nil || len(list.Items) != 0 {
		t.Errorf("GET /resources?kind=Gateway: %d %s", code, body)
	}
	if code, _ := r.do(t, http.MethodGet, "/resources/svc/default/nope", r.adminToken, ""); code != http.StatusNotFound {
		t.Errorf("GET an unknown resource: %d, want 404", code)
	}

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	fixed := waitStatus(t, r, "the error to clear", func(s Status) bool { return s.LastError == "" })
	if fixed.Version != first.Version {
		t.Errorf("version = %s, want %s (same content as the first)", fixed.Version, first.Version)
	}
}

// TestInvalidInitialLoadRecovers: an invalid policy at start serves nothing
// (not even an empty configuration) and says what it waits for; fixing the
// files starts serving.
func TestInvalidInitialLoadRecovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, invalidYAML)
	r := start(t, dir)
	failed := waitStatus(t, r, "the failed initial load", func(s Status) bool { return s.LastError != "" })
	if failed.Serving || failed.Version != "" || strings.Join(failed.WaitingFor, ",") != "policy files" {
		t.Errorf("after a failed initial load: serving %v, version %q, waiting for %v; want not serving, no version, policy files",
			failed.Serving, failed.Version, failed.WaitingFor)
	}

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	fixed := waitStatus(t, r, "recovery", func(s Status) bool { return s.LastError == "" && s.Version != "" })
	if !fixed.Serving || len(fixed.WaitingFor) != 0 {
		t.Errorf("after the fix: serving %v, waiting for %v", fixed.Serving, fixed.WaitingFor)
	}
}

func TestProxiesAndConfigDump(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	cert := r.enroll(t, "orders")
	conn := r.dial(t, cert)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	meta := xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders"}.Struct()
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sidecar~orders~test", Metadata: meta}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, r, "the proxy's ACK", func(s Status) bool {
		return len(s.Proxies) == 1 && s.Proxies[0].Acked[resourcev3.ClusterType] == resp.VersionInfo
	})
	if p := st.Proxies[0]; p.ID != "sidecar~orders~test" || p.Role != "sidecar" || p.Name != "orders" ||
		p.SPIFFEID != "spiffe://meshgate.local/ns/default/svc/orders" || !p.CertNotAfter.Equal(cert.Leaf.NotAfter) || p.MTLSMode != "STRICT" {
		t.Errorf("proxy = %+v", p)
	}

	code, body := r.get(t, "/config_dump?node=sidecar~orders~test")
	if code != http.StatusOK || !strings.Contains(string(body), `"default/orders:80"`) || !strings.Contains(string(body), `"outbound"`) {
		t.Errorf("GET /config_dump = %d %s", code, body)
	}
	if code, _ := r.get(t, "/config_dump?node=nobody"); code != http.StatusNotFound {
		t.Errorf("GET /config_dump for an unknown node = %d, want 404", code)
	}
}
