package controlplane

import (
	"context"
	"encoding/json"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
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

// invalidYAML references a Gateway that does not exist.
const invalidYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: broken
spec:
  parentRefs:
    - {name: no-such-gateway}
  rules:
    - backendRefs:
        - {name: no-such-service, port: 80}
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
}

func start(t *testing.T, paths ...string) running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan running, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ConfigPaths:  paths,
			XDSAddress:   "127.0.0.1:0",
			AdminAddress: "127.0.0.1:0",
			Debounce:     20 * time.Millisecond,
			OnReady:      func(x, a net.Addr) { ready <- running{xds: x, admin: a} },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case r := <-ready:
		return r
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	return running{}
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func status(t *testing.T, r running) Status {
	t.Helper()
	code, body := get(t, "http://"+r.admin.String()+"/status")
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := status(t, r)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last status %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadAndReject(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	if code, body := get(t, "http://"+r.admin.String()+"/healthz"); code != 200 || string(body) != "ok" {
		t.Errorf("GET /healthz = %d %q", code, body)
	}
	first := waitStatus(t, r, "the initial load", func(s Status) bool { return s.Version != "" && !s.LastReload.IsZero() })
	if first.LastError != "" {
		t.Fatalf("initial load error: %s", first.LastError)
	}

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "payments"))
	second := waitStatus(t, r, "a new version", func(s Status) bool { return s.Version != first.Version })

	writeAtomically(t, path, invalidYAML)
	rejected := waitStatus(t, r, "the rejected reload", func(s Status) bool { return s.LastError != "" })
	if rejected.Version != second.Version {
		t.Errorf("version after a rejected reload = %s, want the previous %s", rejected.Version, second.Version)
	}
	if !strings.Contains(rejected.LastError, "policy.yaml") {
		t.Errorf("lastError = %q, want it to name the file", rejected.LastError)
	}

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	fixed := waitStatus(t, r, "the error to clear", func(s Status) bool { return s.LastError == "" })
	if fixed.Version != first.Version {
		t.Errorf("version = %s, want %s (same content as the first)", fixed.Version, first.Version)
	}
}

func TestInvalidInitialLoadRecovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, invalidYAML)
	r := start(t, dir)
	empty := waitStatus(t, r, "the failed initial load", func(s Status) bool { return s.LastError != "" && s.Version != "" })

	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	waitStatus(t, r, "recovery", func(s Status) bool { return s.LastError == "" && s.Version != empty.Version })
}

func TestProxiesAndConfigDump(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
	r := start(t, path)

	conn, err := grpc.NewClient(r.xds.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	meta, err := structpb.NewStruct(map[string]any{"role": "sidecar", "service": "orders"})
	if err != nil {
		t.Fatal(err)
	}
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
	if p := st.Proxies[0]; p.ID != "sidecar~orders~test" || p.Role != "sidecar" || p.Name != "orders" {
		t.Errorf("proxy = %+v", p)
	}

	code, body := get(t, "http://"+r.admin.String()+"/config_dump?node=sidecar~orders~test")
	if code != http.StatusOK || !strings.Contains(string(body), `"default/orders:80"`) || !strings.Contains(string(body), `"outbound"`) {
		t.Errorf("GET /config_dump = %d %s", code, body)
	}
	if code, _ := get(t, "http://"+r.admin.String()+"/config_dump?node=nobody"); code != http.StatusNotFound {
		t.Errorf("GET /config_dump for an unknown node = %d, want 404", code)
	}
}
