package controlplane

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// logBuffer collects a logger's text output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// lateDiscovery syncs when the test says, and, like the Consul catalog
// watch once did, does not call changed for its first snapshot.
type lateDiscovery struct {
	services []*model.DiscoveredService
	synced   chan struct{}
}

func (d *lateDiscovery) Run(ctx context.Context, _ func()) error {
	<-ctx.Done()
	return nil
}

func (d *lateDiscovery) Services() []*model.DiscoveredService {
	select {
	case <-d.synced:
		return d.services
	default:
		return nil
	}
}

func (d *lateDiscovery) WaitSynced(ctx context.Context) error {
	select {
	case <-d.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *lateDiscovery) String() string { return "consul catalog" }

const edgeGateway = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: 18080}]
`

const edgeRouteToOrders = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`

// adsStream opens an ADS stream as the gateway edge (enrolled with a
// certificate) and subscribes to clusters; every response goes to the
// returned channel.
func (r running) adsStream(t *testing.T, id string) <-chan *discoveryv3.DiscoveryResponse {
	t.Helper()
	conn := r.dial(t, r.enroll(t, "edge"))
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	meta := xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"}.Struct()
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id, Metadata: meta}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	out := make(chan *discoveryv3.DiscoveryResponse, 16)
	go func() {
		defer close(out)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			out <- resp
		}
	}()
	return out
}

func clusterNames(t *testing.T, resp *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c.GetName())
	}
	return out
}

// TestNoPushUntilDiscoverySyncs: the Consul catalog is not there when the
// control plane starts (a restart during a Consul outage). A proxy that
// connects is accepted and listed but given nothing (not an empty
// configuration, which would close the gateway's listeners) while the
// status and the log say what is awaited; when the catalog syncs, however
// late and even without a change notification, the proxy gets the whole
// configuration.
func TestNoPushUntilDiscoverySyncs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "gateway.yaml"), edgeGateway)
	writeAtomically(t, filepath.Join(dir, "routes.yaml"), edgeRouteToOrders)
	disc := &lateDiscovery{services: []*model.DiscoveredService{discovered("orders", "127.0.0.1:21011")}, synced: make(chan struct{})}
	logs := &logBuffer{}
	r := startWith(t, Options{ConfigPaths: []string{dir}, Discovery: disc, DiscoverySyncTimeout: 20 * time.Millisecond,
		DiscoveryDebounce: time.Millisecond, Logger: logs.logger()})

	responses := r.adsStream(t, "gateway~edge~1")
	waitFor(t, "the warning naming what is awaited", func() bool {
		return strings.Contains(logs.String(), "not serving any configuration yet") && strings.Contains(logs.String(), "consul catalog")
	})
	st := waitStatus(t, r, "the proxy listed", func(s Status) bool { return len(s.Proxies) == 1 })
	if st.Serving || !slices.Equal(st.WaitingFor, []string{"consul catalog", "policy files"}) || st.Version != "" {
		t.Errorf("before the sync: serving %v, waiting for %v, version %q; want not serving, waiting for the catalog and the policy",
			st.Serving, st.WaitingFor, st.Version)
	}
	select {
	case resp := <-responses:
		t.Fatalf("a configuration before the catalog synced: clusters %v", clusterNames(t, resp))
	default:
	}

	close(disc.synced)
	select {
	case resp, ok := <-responses:
		if !ok {
			t.Fatal("stream closed")
		}
		if got := clusterNames(t, resp); !slices.Equal(got, []string{"default/orders:80"}) {
			t.Errorf("first configuration has clusters %v, want default/orders:80", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no configuration after the catalog synced")
	}
	st = waitStatus(t, r, "serving", func(s Status) bool { return s.Serving })
	if len(st.WaitingFor) != 0 || st.LastError != "" {
		t.Errorf("serving, yet waiting for %v, last error %q", st.WaitingFor, st.LastError)
	}
}

// flakySource fails its first reads, as Consul KV does while the agent is
// down, and never reports its return through Watch.
type flakySource struct {
	mu       sync.Mutex
	failures int
	files    []policy.File
}

func (f *flakySource) Files(context.Context) ([]policy.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("connection refused")
	}
	return f.files, nil
}

func (f *flakySource) Watch(ctx context.Context, _ func()) error {
	<-ctx.Done()
	return nil
}

// TestUnreadablePolicySourceIsReadAgain: a policy source that cannot be read
// at start is waited for (and named), read again until it answers, and
// then served; its failure is logged once, not at every retry.
func TestUnreadablePolicySourceIsReadAgain(t *testing.T) {
	t.Parallel()
	src := &flakySource{failures: 2, files: []policy.File{{Name: "consul:meshgate/policy/Service/default/orders", Data: []byte(strings.ReplaceAll(serviceYAML, "%s", "orders"))}}}
	logs := &logBuffer{}
	r := startWith(t, Options{PolicySource: src, Logger: logs.logger()})
	first := status(t, r)
	if first.Serving || !slices.Equal(first.WaitingFor, []string{"policy source"}) || !strings.Contains(first.LastError, "connection refused") {
		t.Errorf("with the source down: serving %v, waiting for %v, last error %q", first.Serving, first.WaitingFor, first.LastError)
	}
	st := waitStatus(t, r, "serving once the source answers", func(s Status) bool { return s.Serving })
	if st.LastError != "" || st.Version == "" {
		t.Errorf("serving with version %q, last error %q", st.Version, st.LastError)
	}
	if n := strings.Count(logs.String(), "connection refused"); n != 1 {
		t.Errorf("the source's failure logged %d times at info or above, want once:\n%s", n, logs.String())
	}
}

// TestDestructiveEditHeldUntilStable: a policy file emptied, then restored
// within the hold window, never reaches the model; emptied and left so, it
// is applied after the window, with a warning.
func TestDestructiveEditHeldUntilStable(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, hold time.Duration) (running, string, *logBuffer, Status) {
		dir := t.TempDir()
		routes := filepath.Join(dir, "routes.yaml")
		writeAtomically(t, filepath.Join(dir, "services.yaml"), edgeGateway+"---\n"+strings.ReplaceAll(serviceYAML, "%s", "orders"))
		writeAtomically(t, routes, edgeRouteToOrders)
		logs := &logBuffer{}
		r := startWith(t, Options{ConfigPaths: []string{dir}, DestructiveHold: hold, Logger: logs.logger()})
		return r, routes, logs, waitStatus(t, r, "serving", func(s Status) bool { return s.Serving })
	}
	truncate := func(t *testing.T, path string) {
		t.Helper()
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("restored within the window", func(t *testing.T) {
		t.Parallel()
		r, routes, logs, served := setup(t, time.Hour)
		truncate(t, routes)
		held := waitStatus(t, r, "the change held", func(s Status) bool { return s.HeldPolicyChange != nil })
		if h := held.HeldPolicyChange; !strings.Contains(h.Reason, "routes.yaml holds no document any more") ||
			!strings.Contains(h.Reason, "Gateway default/edge loses every route") || !h.ApplyAt.After(h.Since) {
			t.Errorf("held change = %+v", h)
		}
		if held.Version != served.Version {
			t.Errorf("version %s while the change is held, want %s", held.Version, served.Version)
		}
		if !strings.Contains(logs.String(), "destructive policy change held") {
			t.Errorf("no warning when the change was held:\n%s", logs.String())
		}
		writeAtomically(t, routes, edgeRouteToOrders)
		restored := waitStatus(t, r, "the held change superseded", func(s Status) bool { return s.HeldPolicyChange == nil })
		if restored.Version != served.Version || restored.LastError != "" {
			t.Errorf("after the restore: version %s (want %s), last error %q", restored.Version, served.Version, restored.LastError)
		}
	})
	t.Run("left empty", func(t *testing.T) {
		t.Parallel()
		r, routes, logs, served := setup(t, 100*time.Millisecond)
		truncate(t, routes)
		applied := waitStatus(t, r, "the change applied after the hold", func(s Status) bool {
			return s.HeldPolicyChange == nil && s.Version != served.Version
		})
		if applied.LastError != "" {
			t.Errorf("last error %q", applied.LastError)
		}
		if log := logs.String(); !strings.Contains(log, "destructive policy change held") || !strings.Contains(log, "applying a destructive policy change") {
			t.Errorf("the change was not held, then applied with a warning:\n%s", log)
		}
	})
}
