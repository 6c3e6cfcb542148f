package controlplane

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newReloader is a control plane that is not run: the test calls reload
// itself, so every step is one reload.
func newReloader(t *testing.T, opts Options) (*ControlPlane, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	opts.XDSAddress, opts.AdminAddress, opts.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cp, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cp.Close() })
	return cp, logs
}

// resourceStatus is the status of the resource of kind named name in the
// policy last evaluated, or nil.
func resourceStatus(cp *ControlPlane, kind, name string) *policy.ResourceStatus {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.result == nil {
		return nil
	}
	for i, s := range cp.result.Statuses {
		if s.Kind == kind && s.Name == name {
			return &cp.result.Statuses[i]
		}
	}
	return nil
}

// unreadable makes path a file that exists but cannot be read, whoever
// the test runs as: a link to a directory.
func unreadable(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), path); err != nil {
		t.Fatal(err)
	}
}

// TestUnreadablePolicyFileKeepsItsLastGood: a policy file that cannot be
// read keeps its last good resources serving (FileNotRead) while the other
// files' changes apply; before anything is served it holds the first push
// back; a configured directory that is gone keeps the whole model.
func TestUnreadablePolicyFileKeepsItsLastGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		writeAtomically(t, filepath.Join(dir, name), content)
	}
	write("gateway.yaml", acceptGateway)
	write("a.yaml", acceptRoute("a", "/a", ""))
	write("b.yaml", acceptRoute("b", "/b", ""))
	cp, _ := newReloader(t, Options{ConfigPaths: []string{dir}})
	ctx := context.Background()
	if err := cp.reload(ctx); err != nil {
		t.Fatal(err)
	}

	write("a.yaml", acceptRoute("a", "/a2", ""))
	unreadable(t, filepath.Join(dir, "b.yaml"))
	if err := cp.reload(ctx); err != nil {
		t.Fatalf("a reload with one unreadable file: %v", err)
	}
	if p := routePaths(cp.model.Load()); p["a"] != "/a2" || p["b"] != "/b" {
		t.Errorf("routes %v: want a's change (/a2) and b's last good version (/b)", p)
	}
	if s := resourceStatus(cp, policy.KindHTTPRoute, "b"); s == nil || s.State != policy.StateLastGood || s.Reason != policy.ReasonFileNotRead {
		t.Errorf("route b's status %+v: want LastGood, FileNotRead", s)
	}
	if st := cp.status(); !strings.Contains(st.LastError, "b.yaml") || st.RejectedResources != 1 {
		t.Errorf("status: last error %q, %d rejected; want b.yaml's read error, 1", st.LastError, st.RejectedResources)
	}
	if cp.hold.active() {
		t.Errorf("an unreadable file was taken for a destructive change: %s", cp.hold.reason)
	}

	// Before the first push, a file that cannot be read holds it back.
	fresh, _ := newReloader(t, Options{ConfigPaths: []string{dir}})
	if err := fresh.reload(ctx); err == nil || !strings.Contains(err.Error(), "b.yaml") {
		t.Errorf("first reload with an unreadable file: %v, want its read error", err)
	}
	if st := fresh.status(); st.Serving || st.Version != "" {
		t.Errorf("first reload with an unreadable file: serving %v, version %q; want nothing served", st.Serving, st.Version)
	}

	// A configured directory that is gone is not a file's problem: the
	// whole model stays.
	version := cp.status().Version
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := cp.reload(ctx); err == nil {
		t.Error("a reload of a directory that is gone succeeded")
	}
	if st := cp.status(); st.Version != version {
		t.Errorf("version %s after the directory went, want %s kept", st.Version, version)
	}
}

// TestBadDiscoveredEndpointsLeftOut: a discovered service with an invalid
// endpoint (an instance registered in Consul with a bad address) serves its
// other endpoints, the policy's changes apply, and the service's status and
// the log say which endpoint is left out, once.
func TestBadDiscoveredEndpointsLeftOut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "route.yaml"), routeToOrders)
	orders := discovered("orders", "127.0.0.1:1001")
	disc := newFakeDiscovery(orders)
	cp, logs := newReloader(t, Options{ConfigPaths: []string{dir}, Discovery: disc})
	cp.discoverySynced.Store(true)
	ctx := context.Background()
	if err := cp.reload(ctx); err != nil {
		t.Fatal(err)
	}

	bad := discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002")
	bad.Endpoints = append(bad.Endpoints, &model.Endpoint{Host: "node-1.local", Port: 8080})
	disc.services = []*model.DiscoveredService{bad, discovered("users", "127.0.0.1:2001")}
	writeAtomically(t, filepath.Join(dir, "users.yaml"), strings.ReplaceAll(routeToOrders, "orders", "users"))
	for range 2 { // the second reload changes nothing: nothing is logged again
		if err := cp.reload(ctx); err != nil {
			t.Fatalf("a reload with a bad discovered endpoint: %v", err)
		}
	}
	m := cp.model.Load()
	var hosts []string
	for _, ep := range m.Endpoints(m.Service("default", "orders").Ports[0]) {
		hosts = append(hosts, ep.Host)
	}
	if len(hosts) != 2 || slices.Contains(hosts, "node-1.local") {
		t.Errorf("orders serves %v: want its two valid endpoints", hosts)
	}
	if users := m.Service("default", "users"); users == nil || len(users.Ports[0].Routes) == 0 {
		t.Errorf("the policy change (a route to users) is not served")
	}
	s := resourceStatus(cp, policy.KindService, "orders")
	if s == nil || s.State != policy.StateAccepted || s.Reason != policy.ReasonInvalidEndpoints || len(s.Problems) != 1 ||
		!strings.Contains(s.Problems[0], "consul:catalog/orders") || !strings.Contains(s.Problems[0], "node-1.local") {
		t.Fatalf("orders' status %+v: want Accepted, InvalidEndpoints, the bad endpoint", s)
	}
	if c := s.Object.Status.Conditions[len(s.Object.Status.Conditions)-1]; c.Type != policy.ConditionEndpoints || c.Status != "False" ||
		!strings.Contains(c.Message, "1 of its 3 endpoints are left out") {
		t.Errorf("orders' last condition %+v", c)
	}
	if n := strings.Count(logs.String(), "node-1.local"); n != 1 {
		t.Errorf("the bad endpoint is logged %d times, want once:\n%s", n, logs)
	}

	// Fixed: the problem is gone.
	disc.services = []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001"), discovered("users", "127.0.0.1:2001")}
	if err := cp.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if s := resourceStatus(cp, policy.KindService, "orders"); s.Reason != "" || cp.status().LastError != "" {
		t.Errorf("after the fix: orders' reason %q, last error %q", s.Reason, cp.status().LastError)
	}
}

// TestCompileErrorLeavesTheResourceOut: a resource the policy accepted but
// the model cannot compile (a bug, simulated by an evaluation that lets a
// route with session persistence through) is left out with a status and logged as a
// bug; the rest of the policy is served.
func TestCompileErrorLeavesTheResourceOut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeAtomically(t, filepath.Join(dir, "gateway.yaml"), acceptGateway)
	writeAtomically(t, filepath.Join(dir, "a.yaml"), acceptRoute("a", "/a", ""))
	writeAtomically(t, filepath.Join(dir, "b.yaml"), acceptRoute("b", "/b", ""))
	evaluate := func(in policy.Input) *policy.Result {
		r := policy.Evaluate(in)
		set := *r.Set
		set.HTTPRoutes = slices.Clone(set.HTTPRoutes)
		for i, route := range set.HTTPRoutes {
			if route.Name == "b" {
				uncompilable := *route
				uncompilable.Spec.Rules = slices.Clone(route.Spec.Rules)
				uncompilable.Spec.Rules[0].SessionPersistence = &gwapiv1.SessionPersistence{}
				set.HTTPRoutes[i] = &uncompilable
			}
		}
		r.Set = &set
		return r
	}
	cp, logs := newReloader(t, Options{ConfigPaths: []string{dir}, Evaluate: evaluate})
	if err := cp.reload(context.Background()); err != nil {
		t.Fatalf("a reload with a resource that does not compile: %v", err)
	}
	if p := routePaths(cp.model.Load()); p["a"] != "/a" || p["b"] != "" {
		t.Errorf("routes %v: want a only", p)
	}
	s := resourceStatus(cp, policy.KindHTTPRoute, "b")
	if s == nil || s.State != policy.StateRejected || s.Reason != policy.ReasonCompileError || !strings.Contains(strings.Join(s.Problems, ";"), "b.yaml") {
		t.Errorf("route b's status %+v: want Rejected, CompileError, its file", s)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "a bug of meshgate") {
		t.Errorf("the compile error is not logged as a bug:\n%s", logs)
	}
	if st := cp.status(); st.RejectedResources != 1 {
		t.Errorf("%d rejected resources, want 1", st.RejectedResources)
	}
}
