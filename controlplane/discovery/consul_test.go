package discovery

import (
	"github.com/meshgate/meshgate/api/consulreg"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/policy"
)

func entry(id, addr string, port int, status string, tags []string, meta map[string]string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: "n1", Address: "10.0.0.1"},
		Service: &api.AgentService{ID: id, Service: "orders", Address: addr, Port: port, Tags: tags, Meta: meta},
		Checks:  api.HealthChecks{{Status: status}},
	}
}

func TestServiceFromEntries(t *testing.T) {
	t.Parallel()
	sidecarMeta := map[string]string{consulreg.MetaSidecar: "true", consulreg.MetaAppAddress: "127.0.0.1:8080"}
	tests := []struct {
		name           string
		entries        []*api.ServiceEntry
		includeWarning bool
		wantEndpoints  []policy.Endpoint
		wantPort       policy.ServicePort
		wantNil        bool
	}{
		{
			name: "passing only, labels from tags and meta, node address fallback",
			entries: []*api.ServiceEntry{
				entry("a", "", 9000, api.HealthPassing, []string{"version=v2", "plain", "bad key=x"}, map[string]string{"zone": "eu", "meshgate-port": "8080"}),
				entry("b", "127.0.0.2", 9001, api.HealthCritical, nil, nil),
				entry("c", "127.0.0.3", 9002, api.HealthWarning, nil, nil),
			},
			wantEndpoints: []policy.Endpoint{{Address: "10.0.0.1:9000", Labels: map[string]string{"version": "v2", "zone": "eu"}}},
			wantPort:      policy.ServicePort{Port: 8080, Protocol: policy.ProtocolHTTP},
		},
		{
			name: "the node's zone for instances without one",
			entries: func() []*api.ServiceEntry {
				zoned := entry("a", "127.0.0.1", 9000, api.HealthPassing, []string{"topology.kubernetes.io/zone=own"}, nil)
				plain := entry("b", "127.0.0.2", 9001, api.HealthPassing, nil, nil)
				for _, e := range []*api.ServiceEntry{zoned, plain} {
					e.Node.Meta = map[string]string{"zone": "node-zone"}
				}
				return []*api.ServiceEntry{zoned, plain}
			}(),
			wantEndpoints: []policy.Endpoint{
				{Address: "127.0.0.1:9000", Labels: map[string]string{"topology.kubernetes.io/zone": "own"}},
				{Address: "127.0.0.2:9001", Labels: map[string]string{"zone": "node-zone"}},
			},
			wantPort: policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP},
		},
		{
			name:           "warning accepted when asked",
			entries:        []*api.ServiceEntry{entry("c", "127.0.0.3", 9002, api.HealthWarning, nil, map[string]string{consulreg.MetaProtocol: "http2"})},
			includeWarning: true,
			wantEndpoints:  []policy.Endpoint{{Address: "127.0.0.3:9002"}},
			wantPort:       policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP2},
		},
		{
			name:          "grpc, as Consul's service-defaults name it, is h2c to the endpoints",
			entries:       []*api.ServiceEntry{entry("c", "127.0.0.3", 9002, api.HealthPassing, nil, map[string]string{consulreg.MetaProtocol: "grpc"})},
			wantEndpoints: []policy.Endpoint{{Address: "127.0.0.3:9002"}},
			wantPort:      policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP2},
		},
		{
			name: "app registration ignored while its sidecar is registered, even critical",
			entries: []*api.ServiceEntry{
				entry("s", "127.0.0.1", 15006, api.HealthCritical, nil, sidecarMeta),
				entry("s-app", "127.0.0.1", 8080, api.HealthPassing, nil, map[string]string{consulreg.MetaApp: "true", consulreg.MetaSidecarID: "s"}),
			},
			wantPort: policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP},
		},
		{
			name: "sidecar is an mTLS endpoint; a lone app registration is used",
			entries: []*api.ServiceEntry{
				entry("s", "127.0.0.1", 15006, api.HealthPassing, nil, sidecarMeta),
				entry("other-app", "127.0.0.9", 8080, api.HealthPassing, nil, map[string]string{consulreg.MetaApp: "true", consulreg.MetaSidecarID: "gone"}),
			},
			wantEndpoints: []policy.Endpoint{{Address: "127.0.0.9:8080"}, {Address: "127.0.0.1:15006", Sidecar: true}}, // by ID
			wantPort:      policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP},
		},
		{
			name:     "no healthy instance: a service without endpoints",
			entries:  []*api.ServiceEntry{entry("b", "127.0.0.2", 9001, api.HealthCritical, nil, nil)},
			wantPort: policy.ServicePort{Port: DefaultServicePort, Protocol: policy.ProtocolHTTP},
		},
		{
			name:    "gateway nodes are not a service",
			entries: []*api.ServiceEntry{entry("g", "127.0.0.1", 15100, api.HealthPassing, nil, map[string]string{consulreg.MetaGateway: "true"})},
			wantNil: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			discovered := ServiceFromEntries("orders", tt.entries, tt.includeWarning)
			if tt.wantNil {
				if discovered != nil {
					t.Fatalf("want nil, got %+v", discovered)
				}
				return
			}
			svc := discovered.PolicyService()
			if svc.Source.File != "consul:catalog/orders" || svc.Namespace != "default" {
				t.Errorf("source %q namespace %q", svc.Source.File, svc.Namespace)
			}
			if !reflect.DeepEqual(svc.Spec.Endpoints, tt.wantEndpoints) {
				t.Errorf("endpoints %+v, want %+v", svc.Spec.Endpoints, tt.wantEndpoints)
			}
			if !reflect.DeepEqual(svc.Spec.Ports, []policy.ServicePort{tt.wantPort}) {
				t.Errorf("ports %+v, want %+v", svc.Spec.Ports, tt.wantPort)
			}
		})
	}
}

func TestBackoffBounded(t *testing.T) {
	t.Parallel()
	c, err := NewConsul(ConsulOptions{Client: &api.Client{}, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < 70; n++ {
		if d := c.backoff(n); d < 50*time.Millisecond || d > time.Second {
			t.Fatalf("backoff(%d) = %s, outside [50ms, 1s]", n, d)
		}
	}
}

// TestRegistrationRoundTrip: what a sidecar registers (consulreg) is what
// discovery reads back: the app registration is ignored while its sidecar is
// there, and the sidecar is an mTLS endpoint in its namespace.
func TestRegistrationRoundTrip(t *testing.T) {
	t.Parallel()
	regs, err := consulreg.SidecarRegistration{
		Service: "orders", Namespace: "shop", InboundAddress: "127.0.0.1:15006", AppAddress: "127.0.0.1:8080",
		AdminAddress: "127.0.0.1:15101", RegisterApp: true,
	}.Registrations()
	if err != nil || len(regs) != 2 {
		t.Fatalf("registrations: %v (%d)", err, len(regs))
	}
	sc, app := regs[0], regs[1]
	entries := []*api.ServiceEntry{
		{Node: &api.Node{Node: "n"}, Service: &api.AgentService{ID: sc.ID, Address: sc.Address, Port: sc.Port, Meta: sc.Meta}, Checks: api.HealthChecks{{Status: api.HealthPassing}}},
		{Node: &api.Node{Node: "n"}, Service: &api.AgentService{ID: app.ID, Address: app.Address, Port: app.Port, Meta: app.Meta}, Checks: api.HealthChecks{{Status: api.HealthPassing}}},
	}
	svc := ServiceFromEntries("orders", entries, false)
	if len(svc.Endpoints) != 1 || !svc.Endpoints[0].Sidecar || svc.Namespace != "shop" {
		t.Errorf("discovered %+v", svc)
	}
}
