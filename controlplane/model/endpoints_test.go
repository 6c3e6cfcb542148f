package model

import (
	"slices"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

// TestEveryKindCompiles: every kind of the policy's kind registry has a
// compile step, and no step names a kind the policy does not have.
func TestEveryKindCompiles(t *testing.T) {
	t.Parallel()
	var steps []string
	for _, s := range compileSteps {
		steps = append(steps, s.kind)
	}
	kinds := policy.Kinds()
	for _, k := range kinds {
		if !slices.Contains(steps, k) {
			t.Errorf("kind %s has no compile step", k)
		}
	}
	for _, s := range steps {
		if !slices.Contains(kinds, s) {
			t.Errorf("compile step for %s, which is not a policy kind", s)
		}
	}
}

func discovered(name string, port int32, endpoints ...*Endpoint) *DiscoveredService {
	return &DiscoveredService{NamespacedName: NamespacedName{Namespace: "default", Name: name},
		Source: "consul:catalog/" + name, Port: port, Protocol: ProtocolHTTP, Endpoints: endpoints}
}

// compileDiscovered compiles a static Service "static" (one endpoint) and
// the definitions of ds, then adds ds's endpoints.
func compileDiscovered(t *testing.T, ds ...*DiscoveredService) (*Model, *Model) {
	t.Helper()
	set := &policy.Set{Services: []*policy.Service{{Name: "static", Namespace: "default", Spec: policy.ServiceSpec{
		Ports: []policy.ServicePort{{Port: 80}}, Endpoints: []policy.Endpoint{{Address: "10.0.0.9:80"}}}}}}
	for _, d := range ds {
		set.Services = append(set.Services, d.Definition())
	}
	routing, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	m, err := routing.WithDiscovered(ds)
	if err != nil {
		t.Fatal(err)
	}
	return routing, m
}

// TestWithDiscovered: discovered endpoints join the static ones in the
// endpoint index of a new model sharing the routing model's services; the
// routing model keeps its own; the versions follow the endpoints.
func TestWithDiscovered(t *testing.T) {
	t.Parallel()
	a := &Endpoint{Host: "10.0.0.1", Port: 8080, Labels: map[string]string{"version": "v1"}}
	b := &Endpoint{Host: "10.0.0.2", Port: 8080, Sidecar: true}
	routing, m := compileDiscovered(t, discovered("orders", 8080, a, b), discovered("empty", 80))
	orders := m.Service("default", "orders")
	if orders != routing.Service("default", "orders") {
		t.Error("the model with discovered endpoints does not share the routing model's services")
	}
	if got := m.Endpoints(orders.Ports[0]); !slices.Equal(got, []*Endpoint{a, b}) || !m.HasSidecarEndpoints(orders.Ports[0]) {
		t.Errorf("orders endpoints = %v", got)
	}
	if got := routing.Endpoints(orders.Ports[0]); got != nil {
		t.Errorf("the routing model got discovered endpoints: %v", got)
	}
	static := m.Service("default", "static")
	if got := m.Endpoints(static.Ports[0]); len(got) != 1 || got[0].Host != "10.0.0.9" {
		t.Errorf("static endpoints = %v", got)
	}
	if got := m.Endpoints(m.Service("default", "empty").Ports[0]); got != nil {
		t.Errorf("empty endpoints = %v", got)
	}
	if m.Version == routing.Version || m.RoutingVersion == routing.RoutingVersion {
		t.Errorf("versions: with endpoints %s/%s, without %s/%s: want both to differ (a sidecar endpoint came)",
			m.Version, m.RoutingVersion, routing.Version, routing.RoutingVersion)
	}

	moved := &Endpoint{Host: "10.0.0.3", Port: 8080, Labels: a.Labels}
	next, err := routing.WithDiscovered([]*DiscoveredService{discovered("orders", 8080, moved, b), discovered("empty", 80)})
	if err != nil {
		t.Fatal(err)
	}
	if next.RoutingVersion != m.RoutingVersion || next.Version == m.Version {
		t.Errorf("an endpoint moved: routing version %s -> %s (want equal), version %s -> %s (want different)",
			m.RoutingVersion, next.RoutingVersion, m.Version, next.Version)
	}
	if changed, ok := next.EndpointChanges(m); !ok || !slices.Equal(changed, []string{"default/orders:8080"}) {
		t.Errorf("EndpointChanges = %v, %v", changed, ok)
	}

	// Compiled from the whole Services instead, the model is the same.
	whole, err := Compile(&policy.Set{Services: []*policy.Service{
		{Name: "static", Namespace: "default", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}, Endpoints: []policy.Endpoint{{Address: "10.0.0.9:80"}}}},
		discovered("orders", 8080, moved, b).PolicyService(),
		discovered("empty", 80).PolicyService(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if whole.Version != next.Version || whole.RoutingVersion != next.RoutingVersion {
		t.Errorf("compiled whole: %s/%s, with discovered endpoints %s/%s", whole.Version, whole.RoutingVersion, next.Version, next.RoutingVersion)
	}
}

// TestWithDiscoveredLeavesOutUnknown: a discovered service the model does
// not have (its definition was rejected) is left out; one whose cluster
// has endpoints already (a static Service's) is an error.
func TestWithDiscoveredLeavesOutUnknown(t *testing.T) {
	t.Parallel()
	routing, _ := compileDiscovered(t, discovered("orders", 8080))
	ep := &Endpoint{Host: "10.0.0.1", Port: 80}
	for _, d := range []*DiscoveredService{discovered("other", 80, ep), discovered("orders", 9090, ep)} {
		m, err := routing.WithDiscovered([]*DiscoveredService{d})
		if err != nil || m.Version != routing.Version {
			t.Errorf("WithDiscovered(%s:%d): version %s, %v; want it left out", d.Name, d.Port, m.Version, err)
		}
	}
	if _, err := routing.WithDiscovered([]*DiscoveredService{discovered("static", 80)}); err == nil {
		t.Error("WithDiscovered(static:80): want an error")
	}
}

func TestDiscoveredServiceAsPolicy(t *testing.T) {
	t.Parallel()
	d := discovered("orders", 8080, &Endpoint{Host: "::1", Port: 9000, Labels: map[string]string{"v": "1"}, Sidecar: true})
	ps := d.PolicyService()
	if ps.Source.File != "consul:catalog/orders" || ps.Source.Line != 1 || ps.Spec.Ports[0].Port != 8080 ||
		len(ps.Spec.Endpoints) != 1 || ps.Spec.Endpoints[0].Address != "[::1]:9000" || !ps.Spec.Endpoints[0].Sidecar {
		t.Errorf("PolicyService = %+v", ps)
	}
	if def := d.Definition(); len(def.Spec.Endpoints) != 0 {
		t.Errorf("Definition has endpoints: %+v", def.Spec.Endpoints)
	}
	if errs := discovered("x", 80, &Endpoint{Host: "node-1", Port: 80}).CheckEndpoints(); len(errs) != 1 {
		t.Errorf("CheckEndpoints of a host name = %v, want one error", errs)
	}
	if !d.SameDefinition(discovered("orders", 8080)) || d.SameDefinition(discovered("orders", 8081)) {
		t.Error("SameDefinition compares endpoints or ignores the port")
	}
}
