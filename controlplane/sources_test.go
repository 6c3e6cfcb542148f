package controlplane

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
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
	services []*policy.Service
	changed  func()
	started  chan struct{}
}

func newFakeDiscovery(services ...*policy.Service) *fakeDiscovery {
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

func (f *fakeDiscovery) Services() []*policy.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services
}

func (f *fakeDiscovery) WaitSynced(ctx context.Context) error { return nil }

func (f *fakeDiscovery) set(services ...*policy.Service) {
	f.mu.Lock()
	f.services = services
	changed := f.changed
	f.mu.Unlock()
	changed()
}

func discovered(name string, addrs ...string) *policy.Service {
	svc := &policy.Service{Name: name, Namespace: "default", Source: policy.Source{File: "consul:catalog/" + name}}
	svc.Spec.Ports = []policy.ServicePort{{Port: 80, Protocol: policy.ProtocolHTTP}}
	for _, a := range addrs {
		svc.Spec.Endpoints = append(svc.Spec.Endpoints, policy.Endpoint{Address: a, Sidecar: true, Labels: map[string]string{"version": "v1"}})
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
		services  []*policy.Service
		wantErr   []string // substrings of the error
		wantNames []string // services of the set
	}{
		{
			name:      "route to a discovered service",
			files:     map[string]string{"route.yaml": routeToOrders},
			services:  []*policy.Service{discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002")},
			wantNames: []string{"orders"},
		},
		{
			name:      "static and discovered services mix",
			files:     map[string]string{"static.yaml": strings.ReplaceAll(serviceYAML, "%s", "billing")},
			services:  []*policy.Service{discovered("orders")},
			wantNames: []string{"billing", "orders"},
		},
		{
			name:     "a name in both is an error naming both",
			files:    map[string]string{"static.yaml": staticOrders},
			services: []*policy.Service{discovered("orders", "127.0.0.1:1001")},
			wantErr:  []string{"static.yaml", `duplicate Service "default/orders"`, "consul:catalog/orders"},
		},
		{
			name:      "policy source instead of files",
			source:    &fakePolicySource{files: []policy.File{{Name: "consul:kv/route", Data: []byte(routeToOrders)}}},
			services:  []*policy.Service{discovered("orders", "127.0.0.1:1001")},
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
			opts.Load = policy.LoadFiles
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
				return len(s.Ports[0].Endpoints)
			}
		}
		return -1
	}
	if n := endpoints(); n != 1 {
		t.Fatalf("orders has %d endpoints, want 1", n)
	}
	begin := time.Now()
	disc.set(discovered("orders", "127.0.0.1:1001", "127.0.0.1:1002"))
	waitFor(t, "second endpoint", func() bool { return endpoints() == 2 })
	t.Logf("discovery change compiled in %s", time.Since(begin))

	version := cp.status().Version
	disc.set(discovered("orders", "127.0.0.1:1003"), discovered("billing", "127.0.0.1:1004"))
	waitFor(t, "rejection", func() bool { return strings.Contains(cp.status().LastError, "consul:catalog/billing") })
	if st := cp.status(); st.Version != version || endpoints() != 2 {
		t.Errorf("rejected change was served: version %s (was %s), %d endpoints", st.Version, version, endpoints())
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
