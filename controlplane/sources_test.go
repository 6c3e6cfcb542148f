package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/internal/testutil"
	"github.com/meshgate/meshgate/policy"
)

// fakeDiscovery is a Discovery whose services the test sets.
type fakeDiscovery struct {
	mu       sync.Mutex
	services []*model.DiscoveredService
	changed  func()
	started  chan struct{}
}

func newFakeDiscovery(services ...*model.DiscoveredService) *fakeDiscovery {
	return &fakeDiscovery{services: services, started: make(chan struct{})}
}

func (f *fakeDiscovery) Run(ctx context.Context, changed func()) error {
	f.mu.Lock()
	f.changed = changed
	f.mu.Unlock()
	close(f.started)
	<-ctx.Done()
	return nil
}

func (f *fakeDiscovery) Services() []*model.DiscoveredService {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services
}

func (f *fakeDiscovery) WaitSynced(ctx context.Context) error { return nil }

func (f *fakeDiscovery) set(services ...*model.DiscoveredService) {
	f.mu.Lock()
	f.services = services
	changed := f.changed
	f.mu.Unlock()
	changed()
}

// discovered is a service as the Consul catalog gives it, with sidecar
// endpoints at addrs ("host:port").
func discovered(name string, addrs ...string) *model.DiscoveredService {
	svc := &model.DiscoveredService{NamespacedName: model.NamespacedName{Namespace: "default", Name: name},
		Source: "consul:catalog/" + name, Port: 80, Protocol: model.ProtocolHTTP}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			panic(err)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			panic(err)
		}
		svc.Endpoints = append(svc.Endpoints, &model.Endpoint{Host: host, Port: uint32(n), Sidecar: true, Labels: map[string]string{"version": "v1"}})
	}
	return svc
}

// fakePolicySource serves fixed files or an error.
type fakePolicySource struct {
	files []policy.File
	err   error
}

func (f fakePolicySource) Files(context.Context) ([]policy.File, error) { return f.files, f.err }
func (f fakePolicySource) Watch(ctx context.Context, _ func()) error {
	<-ctx.Done()
	return nil
}

const routeToOrders = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`

func TestLoadSetMergesDiscovery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	staticOrders := strings.ReplaceAll(serviceYAML, "%s", "orders")
	tests := []struct {
		name      string
		files     map[string]string
		source    *fakePolicySource
		services  []*model.DiscoveredService
		wantErr   []string // substrings of the error
		wantNames []string // services of the set
	}{
		{
			name:      "route to a discovered service",
			files:     map[string]string{"route.yaml": routeToOrders},
			services:  []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002")},
			wantNames: []string{"orders"},
		},
		{
			name:      "static and discovered services mix",
			files:     map[string]string{"static.yaml": strings.ReplaceAll(serviceYAML, "%s", "billing")},
			services:  []*model.DiscoveredService{discovered("orders")},
			wantNames: []string{"billing", "orders"},
		},
		{
			name:     "a name in both is an error naming both",
			files:    map[string]string{"static.yaml": staticOrders},
			services: []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001")},
			wantErr:  []string{"static.yaml", `duplicate Service "default/orders"`, "consul:catalog/orders"},
		},
		{
			name:      "policy source instead of files",
			source:    &fakePolicySource{files: []policy.File{{Name: "consul:kv/route", Data: []byte(routeToOrders)}}},
			services:  []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001")},
			wantNames: []string{"orders"},
		},
		{
			name:    "policy source failure keeps the last model",
			source:  &fakePolicySource{err: errors.New("connection refused")},
			wantErr: []string{"policy source", "connection refused"},
		},
		{
			name:    "route to a service discovery does not have",
			files:   map[string]string{"route.yaml": routeToOrders},
			wantErr: []string{"route.yaml", "orders"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := filepath.Join(dir, string(rune('a'+i)))
			if err := os.MkdirAll(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(sub, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			opts := Options{Discovery: newFakeDiscovery(tt.services...)}
			if tt.source != nil {
				opts.PolicySource = tt.source
			} else {
				opts.ConfigPaths = []string{sub}
			}
			opts.Load = policy.LoadInput
			cp := &ControlPlane{opts: opts}
			in, err := cp.readPolicy(context.Background())
			var m *model.Model
			if err == nil {
				m, _, err = cp.compile(in)
			}
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("want an error, got a set")
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			var names []string
			for _, s := range m.Services {
				names = append(names, s.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.wantNames, ",") {
				t.Errorf("services %v, want %v", names, tt.wantNames)
			}
		})
	}
}

// TestDiscoveryChangeReloads: a discovery change is compiled into a new
// model quickly; a change that clashes with a static Service is rejected and
// the previous model stays.
func TestDiscoveryChangeReloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "static.yaml"), []byte(strings.ReplaceAll(serviceYAML, "%s", "billing")), 0o644); err != nil {
		t.Fatal(err)
	}
	disc := newFakeDiscovery(discovered("orders", "127.0.0.1:1001"))
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := New(ctx, Options{
		ConfigPaths: []string{dir}, Discovery: disc, XDSAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		DataDir: t.TempDir(), DiscoveryDebounce: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	cp.opts.OnReady = func(net.Addr, net.Addr) { ready.Store(true) }
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-disc.started
	waitFor(t, "ready", func() bool { return ready.Load() })

	endpoints := func() int {
		for _, s := range cp.model.Load().Services {
			if s.Name == "orders" {
				return len(cp.model.Load().Endpoints(s.Ports[0]))
			}
		}
		return -1
	}
	if n := endpoints(); n != 1 {
		t.Fatalf("orders has %d endpoints, want 1", n)
	}
	begin := time.Now()
	before := cp.xds.UpdateCounts()
	disc.set(discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002"))
	waitFor(t, "second endpoint", func() bool { return endpoints() == 2 })
	t.Logf("discovery change compiled in %s", time.Since(begin))
	// An endpoint change alone reaches the proxies by the endpoint-only
	// path: no node is translated again. The model is stored before it is
	// handed to the xDS server: wait for the update to be counted.
	waitFor(t, "the endpoint change pushed", func() bool { return cp.xds.UpdateCounts() != before })
	if after := cp.xds.UpdateCounts(); after.Full != before.Full || after.EndpointsOnly != before.EndpointsOnly+1 {
		t.Errorf("the endpoint change took %+v, was %+v: want one endpoint-only update", after, before)
	}

	version := cp.status().Version
	disc.set(discovered("orders", "127.0.0.1:1003"), discovered("billing", "127.0.0.1:1004"))
	// The static billing repeats the discovered one: it alone is
	// rejected, the change is served.
	waitFor(t, "rejection", func() bool { return strings.Contains(cp.status().LastError, "consul:catalog/billing") })
	if st := cp.status(); st.Version == version || endpoints() != 1 || st.RejectedResources != 1 {
		t.Errorf("change not served: version %s (was %s), %d endpoints, %d rejected", st.Version, version, endpoints(), st.RejectedResources)
	}
}

// waitFor is testutil.Eventually for a boolean condition.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, testutil.Holds(cond))
}

// TestDebouncedCoalesces: the triggers within the delay of the first make
// one call, exactly the delay after the first (virtual time: the test does
// not depend on how fast the machine runs the triggers); a trigger after it
// fired makes another.
func TestDebouncedCoalesces(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const delay = 20 * time.Millisecond
		var calls atomic.Int32
		trigger, stop := debounced(delay, func() { calls.Add(1) })
		defer stop()
		for range 10 {
			trigger()
			time.Sleep(delay / 20)
		}
		time.Sleep(delay/2 - time.Nanosecond) // just before the delay
		synctest.Wait()
		if n := calls.Load(); n != 0 {
			t.Fatalf("%d calls before the delay, want 0", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d calls at the delay, want 1", n)
		}
		trigger()
		time.Sleep(delay)
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls after a second trigger, want 2", n)
		}
	})
}

// asDocuments renders discovered services as policy files of one JSON
// document each, named after their source: how the control plane used to
// validate them. It is the oracle of TestDiscoveredValidatedAsDocuments.
func asDocuments(t *testing.T, services []*model.DiscoveredService) []policy.File {
	t.Helper()
	var files []policy.File
	for _, d := range services {
		svc := d.PolicyService()
		data, err := json.Marshal(map[string]any{
			"apiVersion": policy.MeshgateAPIVersion, "kind": policy.KindService,
			"metadata": map[string]string{"name": svc.Name, "namespace": svc.Namespace}, "spec": svc.Spec,
		})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, policy.File{Name: svc.Source.File, Data: data})
	}
	return files
}

// TestDiscoveredValidatedAsDocuments: discovered services, typed, are
// validated and compiled exactly as when they were rendered as policy
// documents before the policy files: the same errors in the same order,
// or a model of the same versions and endpoints. `meshgate apply --store
// consul` validates them as PolicyServices with the policy.
func TestDiscoveredValidatedAsDocuments(t *testing.T) {
	t.Parallel()
	bad := discovered("billing")
	bad.Endpoints = []*model.Endpoint{{Host: "node-1.local", Port: 8080}, {Host: "10.0.0.1", Port: 0, Labels: map[string]string{"bad key": "x"}}}
	badName := discovered("Pay_ments", "127.0.0.1:1005")
	staticOrders := strings.ReplaceAll(serviceYAML, "%s", "orders")
	tests := []struct {
		name     string
		services []*model.DiscoveredService
		files    map[string]string
		wantErr  bool
	}{
		{name: "valid", services: []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002"), discovered("users")},
			files: map[string]string{"route.yaml": routeToOrders}},
		{name: "bad endpoints", services: []*model.DiscoveredService{bad, discovered("orders", "127.0.0.1:1001")},
			files: map[string]string{"route.yaml": routeToOrders}, wantErr: true},
		{name: "bad endpoints and policy errors", services: []*model.DiscoveredService{bad, badName},
			files: map[string]string{"route.yaml": routeToOrders, "static.yaml": staticOrders}, wantErr: true},
		{name: "a static duplicate", services: []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001")},
			files: map[string]string{"static.yaml": staticOrders}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cp := &ControlPlane{opts: Options{ConfigPaths: []string{dir}, Discovery: newFakeDiscovery(tt.services...), Load: policy.NewCache().LoadInput}}
			in, err := cp.readPolicy(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got, _, gotErr := cp.compile(in)

			wantSet, wantErr := policy.LoadFiles(slices.Concat(asDocuments(t, tt.services), in.files)...)
			if (gotErr != nil) != tt.wantErr || fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("errors:\n%v\nwant (as documents):\n%v", gotErr, wantErr)
			}
			if _, applyErr := policy.LoadInput(policy.Input{Services: PolicyServices(tt.services), Files: in.files}); fmt.Sprint(applyErr) != fmt.Sprint(wantErr) {
				t.Errorf("apply's validation:\n%v\nwant:\n%v", applyErr, wantErr)
			}
			if wantErr != nil {
				return
			}
			want, err := model.CompileWith(wantSet, model.CompileOptions{PolicyVersion: in.version})
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != want.Version || got.RoutingVersion != want.RoutingVersion || got.PolicyVersion != want.PolicyVersion {
				t.Errorf("versions %s/%s/%s, want (as documents) %s/%s/%s", got.Version, got.RoutingVersion, got.PolicyVersion,
					want.Version, want.RoutingVersion, want.PolicyVersion)
			}
		})
	}
}

// TestEndpointChangeSkipsValidation: a reload after a change of discovered
// endpoints alone neither validates nor compiles the policy again, and
// checks the endpoints of the changed service only; a change of a
// discovered definition or of the policy does both. The models are those
// a full compilation gives.
func TestEndpointChangeSkipsValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "route.yaml"), []byte(routeToOrders), 0o644); err != nil {
		t.Fatal(err)
	}
	users := discovered("users", "127.0.0.1:2001")
	disc := newFakeDiscovery(discovered("orders", "127.0.0.1:1001"), users)
	loads := 0
	cp := &ControlPlane{opts: Options{ConfigPaths: []string{dir}, Discovery: disc, Load: func(in policy.Input) (*policy.Set, error) {
		loads++
		return policy.LoadInput(in)
	}}}
	compile := func(what string) *model.Model {
		t.Helper()
		in, err := cp.readPolicy(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := cp.compile(in)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// A fresh control plane compiles the same model.
		fresh := &ControlPlane{opts: cp.opts}
		fresh.opts.Load = policy.LoadInput
		want, _, err := fresh.compile(in)
		if err != nil || want.Version != m.Version || want.RoutingVersion != m.RoutingVersion {
			t.Errorf("%s: version %s/%s, a full compilation's %s/%s (%v)", what, m.Version, m.RoutingVersion, want.Version, want.RoutingVersion, err)
		}
		return m
	}
	first := compile("first")
	if loads != 1 || len(cp.compiled.endpointErrs) != 2 {
		t.Fatalf("first reload: %d loads, %d endpoint checks; want 1, 2", loads, len(cp.compiled.endpointErrs))
	}
	checked := cp.compiled.endpointErrs

	disc.services = []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002"), users}
	second := compile("an endpoint added")
	if loads != 1 {
		t.Errorf("an endpoint change validated the policy again (%d loads)", loads)
	}
	if changed, ok := second.EndpointChanges(first); !ok || !slices.Equal(changed, []string{"default/orders:80"}) {
		t.Errorf("EndpointChanges = %v, %v", changed, ok)
	}
	if _, reused := checked[users]; !reused || len(cp.compiled.endpointErrs) != 2 {
		t.Errorf("the unchanged service's endpoints were not kept as checked")
	}

	moved := *users
	moved.Port = 8080
	disc.services = []*model.DiscoveredService{discovered("orders", "127.0.0.1:1001"), &moved}
	compile("a port changed")
	if loads != 2 {
		t.Errorf("a definition change: %d loads, want 2", loads)
	}
	if err := os.WriteFile(filepath.Join(dir, "more.yaml"), []byte(strings.ReplaceAll(serviceYAML, "%s", "billing")), 0o644); err != nil {
		t.Fatal(err)
	}
	compile("a policy file added")
	if loads != 3 {
		t.Errorf("a policy change: %d loads, want 3", loads)
	}
}
