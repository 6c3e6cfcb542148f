package kvpolicy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/state/consultest"
	"github.com/meshgate/meshgate/policy"
)

const servicesYAML = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  ports:
    - {name: http, port: 80}
  endpoints:
    - {address: 127.0.0.1:21011}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: orders-v2
  namespace: default
spec:
  ports:
    - {port: 80}
  endpoints:
    - {address: 127.0.0.1:21012}
`

const routeYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: orders-mesh
spec:
  parentRefs:
    - {group: "", kind: Service, name: orders, port: 80}
  rules:
    - backendRefs:
        - {name: orders-v2, port: 80}
`

func file(name, data string) []policy.File { return []policy.File{{Name: name, Data: []byte(data)}} }

func serviceYAML(name string, port int) string {
	return fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: %s}
spec:
  ports: [{port: %d}]
  endpoints: [{address: "127.0.0.1:%d"}]
`, name, port, 20000+port)
}

func newStore(t *testing.T) (*Store, *api.Client) {
	t.Helper()
	agent := consultest.Start(t)
	return New(agent.Client, ""), agent.Client
}

func actions(rs []Result) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return strings.Join(out, "; ")
}

func TestApplyGetListDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)

	steps := []struct {
		name    string
		files   []policy.File
		want    string
		wantErr string
	}{
		{name: "route before its services", files: file("route.yaml", routeYAML), wantErr: "route.yaml"},
		{name: "services", files: file("services.yaml", servicesYAML),
			want: "service default/orders created; service default/orders-v2 created"},
		{name: "route", files: file("route.yaml", routeYAML), want: "httproute default/orders-mesh created"},
		{name: "again", files: file("all.yaml", servicesYAML+"---\n"+routeYAML),
			want: "service default/orders unchanged; service default/orders-v2 unchanged; httproute default/orders-mesh unchanged"},
		{name: "one changed", files: file("services.yaml", strings.Replace(servicesYAML, "21012", "21013", 1)),
			want: "service default/orders unchanged; service default/orders-v2 configured"},
		{name: "invalid change is refused", files: file("bad.yaml", strings.Replace(servicesYAML, "port: 80}", "port: 0}", 1)),
			wantErr: "bad.yaml"},
	}
	for _, st := range steps {
		got, err := s.Apply(ctx, st.files)
		if st.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), st.wantErr) {
				t.Fatalf("%s: err = %v, want one naming %q", st.name, err, st.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if actions(got) != st.want {
			t.Errorf("%s: %s\nwant %s", st.name, actions(got), st.want)
		}
	}

	r, err := s.Get(ctx, "svc", "", "orders-v2")
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != "meshgate/policy/Service/default/orders-v2" || !strings.Contains(string(r.Data), "21013") {
		t.Errorf("Get = %s %q", r.Key, r.Data)
	}
	if _, err := s.Get(ctx, "Service", "default", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing = %v", err)
	}
	if _, err := s.Get(ctx, "Widget", "default", "x"); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Get unknown kind = %v", err)
	}
	for kind, want := range map[string]int{"services": 2, "HTTPRoute": 1, "": 3, "gateway": 0} {
		list, err := s.List(ctx, kind)
		if err != nil || len(list) != want {
			t.Errorf("List(%q) = %d, %v; want %d", kind, len(list), err, want)
		}
	}

	// A service a route needs cannot go; once the route is gone it can.
	if err := s.Delete(ctx, "service", "default", "orders-v2"); err == nil || !strings.Contains(err.Error(), "would be invalid") {
		t.Errorf("Delete of a referenced service = %v", err)
	}
	if err := s.Delete(ctx, "httproute", "default", "orders-mesh"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "service", "default", "orders-v2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "service", "default", "orders-v2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete twice = %v, want ErrNotFound", err)
	}
	if list, _ := s.List(ctx, ""); len(list) != 1 {
		t.Errorf("after deletes: %d resources, want 1", len(list))
	}
}

// TestApplyConflict: a write between an Apply's read and its transaction
// makes the Apply fail with ErrConflict and write nothing.
func TestApplyConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, client := newStore(t)
	other := New(client, "")
	if _, err := s.Apply(ctx, file("a.yaml", serviceYAML("alpha", 80))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		apply string
		race  string
	}{
		{"same key", serviceYAML("alpha", 81), serviceYAML("alpha", 82)},
		{"other key", serviceYAML("beta", 83), serviceYAML("gamma", 84)},
	}
	for _, tt := range tests {
		s.beforeWrite = func() {
			if _, err := other.Apply(ctx, file("race.yaml", tt.race)); err != nil {
				t.Errorf("%s: the racing apply: %v", tt.name, err)
			}
		}
		_, err := s.Apply(ctx, file("mine.yaml", tt.apply))
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "policy changed since it was read, retry") {
			t.Errorf("%s: Apply = %v, want ErrConflict", tt.name, err)
		}
	}
	s.beforeWrite = nil
	alpha, err := s.Get(ctx, "Service", "default", "alpha")
	if err != nil || !strings.Contains(string(alpha.Data), "port: 82") {
		t.Errorf("alpha = %q, %v; want the racing write (port 82)", alpha.Data, err)
	}
	if _, err := s.Get(ctx, "Service", "default", "beta"); !errors.Is(err, ErrNotFound) {
		t.Errorf("beta written despite the conflict: %v", err)
	}

	// Many applies at once: each succeeds or conflicts, never both writes
	// of one read; a retry loop gets every one in.
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	for i := range 6 {
		wg.Go(func() {
			st := New(client, "")
			for {
				_, err := st.Apply(ctx, file("c.yaml", serviceYAML(fmt.Sprintf("c%d", i), 90+i)))
				if errors.Is(err, ErrConflict) {
					mu.Lock()
					conflicts++
					mu.Unlock()
					continue
				}
				if err != nil {
					t.Errorf("apply c%d: %v", i, err)
				}
				return
			}
		})
	}
	wg.Wait()
	if list, _ := s.List(ctx, "Service"); len(list) != 2+6 {
		t.Errorf("%d services after the concurrent applies, want 8", len(list))
	}
	t.Logf("%d conflicts retried", conflicts)
}

// TestHandWrittenGarbage: invalid content written straight into KV is
// reported with its key, by the loader over Source.Files and by Apply.
func TestHandWrittenGarbage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, client := newStore(t)
	if _, err := s.Apply(ctx, file("a.yaml", serviceYAML("alpha", 80))); err != nil {
		t.Fatal(err)
	}
	src := s.Source()
	files, err := src.Files(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Name != "consul:meshgate/policy/Service/default/alpha" {
		t.Fatalf("Files = %v", files)
	}
	if _, err := policy.LoadFiles(files...); err != nil {
		t.Fatalf("good policy does not load: %v", err)
	}

	const badKey = "meshgate/policy/HTTPRoute/default/bad"
	tests := map[string]string{
		"yaml syntax":    "kind: HTTPRoute\nmetadata: {name: bad\n",
		"unknown kind":   "apiVersion: meshgate.dev/v1alpha1\nkind: Widget\nmetadata: {name: bad}\n",
		"dangling route": routeYAML,
	}
	for name, garbage := range tests {
		if _, err := client.KV().Put(&api.KVPair{Key: badKey, Value: []byte(garbage)}, nil); err != nil {
			t.Fatal(err)
		}
		files, err := src.Files(ctx)
		if err != nil {
			t.Fatalf("%s: Files: %v", name, err)
		}
		_, err = policy.LoadFiles(files...)
		if err == nil || !strings.Contains(err.Error(), "consul:"+badKey) {
			t.Errorf("%s: LoadFiles = %v, want an error naming consul:%s", name, err, badKey)
		}
		if _, err := s.Apply(ctx, file("b.yaml", serviceYAML("beta", 81))); err == nil || !strings.Contains(err.Error(), "consul:"+badKey) {
			t.Errorf("%s: Apply over garbage = %v, want an error naming the key", name, err)
		}
	}
	// The garbage can be deleted (the policy left is valid) and then
	// applying works again.
	if err := s.Delete(ctx, "HTTPRoute", "default", "bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, file("b.yaml", serviceYAML("beta", 81))); err != nil {
		t.Fatal(err)
	}
}

func TestSourceWatch(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := s.Source()
	if _, err := src.Files(ctx); err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 8)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, func() { changes <- struct{}{} }) }()
	// Watch starts from the index Files saw: a write right away is seen.
	if _, err := s.Apply(ctx, file("a.yaml", serviceYAML("alpha", 80))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not report the apply")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not stop")
	}
}

func TestCanonicalKind(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"svc": "Service", "HTTPRoutes": "HTTPRoute", "gateway": "Gateway",
		"SecurityPolicy": "SecurityPolicy", "meshconfigs": "MeshConfig", "widget": ""} {
		got, err := CanonicalKind(in)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("CanonicalKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestApplyWithDiscoveredServices: with WithServices, Apply and Delete
// validate the policy with the discovered services placed first, as the
// control plane does: a route to a discovered service is valid, a Service
// resource named like one is its duplicate, and a failing source writes
// nothing.
func TestApplyWithDiscoveredServices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	var calls int
	var sourceErr error
	discovered := []*policy.Service{{Name: "orders", Namespace: "default", Source: policy.Source{File: "consul:catalog/orders", Line: 1},
		Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80, Protocol: policy.ProtocolHTTP}},
			Endpoints: []policy.Endpoint{{Address: "127.0.0.1:20080"}}}}}
	s.WithServices(func(context.Context) ([]*policy.Service, error) {
		calls++
		return discovered, sourceErr
	})
	route := strings.Replace(routeYAML, "orders-v2", "orders", 1) // orders → orders: both discovered

	if got, err := s.Apply(ctx, file("route.yaml", route)); err != nil || actions(got) != "httproute default/orders-mesh created" {
		t.Fatalf("route to a discovered service: %s, %v", actions(got), err)
	}
	if got, err := s.Apply(ctx, file("users.yaml", serviceYAML("users", 80))); err != nil || actions(got) != "service default/users created" {
		t.Fatalf("unrelated service: %s, %v", actions(got), err)
	}
	_, err := s.Apply(ctx, file("dup.yaml", serviceYAML("orders", 80)))
	if err == nil || !strings.Contains(err.Error(), `dup.yaml:3: metadata.name: duplicate Service "default/orders"`) ||
		!strings.Contains(err.Error(), "consul:catalog/orders") {
		t.Errorf("Service named like a discovered one: %v", err)
	}
	if err := s.Delete(ctx, "service", "default", "users"); err != nil {
		t.Errorf("delete of an unrelated service: %v", err)
	}
	if calls != 4 {
		t.Errorf("the service source was called %d times, want once per Apply and Delete (4)", calls)
	}

	sourceErr = errors.New("catalog unreachable")
	if _, err := s.Apply(ctx, file("users.yaml", serviceYAML("users", 80))); !errors.Is(err, sourceErr) {
		t.Errorf("Apply with a failing service source = %v, want its error", err)
	}
	if err := s.Delete(ctx, "httproute", "default", "orders-mesh"); !errors.Is(err, sourceErr) {
		t.Errorf("Delete with a failing service source = %v, want its error", err)
	}
	if list, _ := s.List(ctx, ""); len(list) != 1 {
		t.Errorf("after failed calls: %d resources, want the route alone", len(list))
	}

	// With no discovered service left the route is what is invalid:
	// deleting it is allowed.
	sourceErr, discovered = nil, nil
	if err := s.Delete(ctx, "httproute", "default", "orders-mesh"); err != nil {
		t.Errorf("deleting the route itself leaves a valid policy: %v", err)
	}
}
