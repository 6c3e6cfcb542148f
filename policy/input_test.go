package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// asDocuments renders Services as policy documents, one file of one JSON
// document each, named after their Source: how a discovery source's
// services used to reach the loader. It is the oracle of the tests below:
// a Service given as a value must be validated as its document would be.
func asDocuments(t *testing.T, services []*Service) []File {
	t.Helper()
	files := make([]File, 0, len(services))
	for _, s := range services {
		data, err := json.Marshal(map[string]any{
			"apiVersion": MeshgateAPIVersion,
			"kind":       KindService,
			"metadata":   map[string]string{"name": s.Name, "namespace": s.Namespace},
			"spec":       s.Spec,
		})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Name: s.Source.File, Data: data})
	}
	return files
}

// discoveredService is a Service as a discovery source gives it.
func discoveredService(name, namespace string, port int32, protocol string, endpoints ...Endpoint) *Service {
	return &Service{Name: name, Namespace: namespace, Source: Source{File: "consul:catalog/" + name, Line: 1},
		Spec: ServiceSpec{Ports: []ServicePort{{Port: port, Protocol: protocol}}, Endpoints: endpoints}}
}

// comparable is what a Set holds, without what only decoding records (the
// files read, the lines of fields).
func comparable(s *Set) string {
	if s == nil {
		return "<nil>"
	}
	var out []string
	add := func(what, namespace, name string, spec any) {
		b, err := json.Marshal(spec)
		if err != nil {
			b = []byte(err.Error())
		}
		out = append(out, fmt.Sprintf("%s %s/%s %s", what, namespace, name, b))
	}
	for _, svc := range s.Services {
		add(fmt.Sprintf("service at %s:%d", svc.Source.File, svc.Source.Line), svc.Namespace, svc.Name, svc.Spec)
	}
	for _, r := range s.HTTPRoutes {
		add("route", r.Namespace, r.Name, r.Spec)
	}
	for _, g := range s.Gateways {
		add("gateway", g.Namespace, g.Name, g.Spec)
	}
	for _, p := range s.SecurityPolicies {
		add("policy", p.Namespace, p.Name, p.Spec)
	}
	return fmt.Sprint(out)
}

const inputRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-orders}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`

const inputStaticOrders = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
`

// TestLoadInputServicesAsDocuments: Services given as values load exactly
// as their documents do: the same set, the same errors in the same order,
// through LoadInput and a Cache.
func TestLoadInputServicesAsDocuments(t *testing.T) {
	t.Parallel()
	ok := Endpoint{Address: "10.0.0.1:8080", Labels: map[string]string{"version": "v1"}}
	tests := []struct {
		name     string
		services []*Service
		files    []File
		wantErr  bool
	}{
		{name: "a route to a discovered service",
			services: []*Service{discoveredService("orders", "default", 80, ProtocolHTTP, ok, Endpoint{Address: "10.0.0.2:8080", Sidecar: true})},
			files:    []File{{Name: "route.yaml", Data: []byte(inputRoute)}}},
		{name: "default namespace and protocol",
			services: []*Service{discoveredService("orders", "", 80, "", ok)},
			files:    []File{{Name: "route.yaml", Data: []byte(inputRoute)}}},
		{name: "a static service named like a discovered one is its duplicate",
			services: []*Service{discoveredService("orders", "default", 80, ProtocolHTTP2, ok)},
			files:    []File{{Name: "static.yaml", Data: []byte(inputStaticOrders)}}, wantErr: true},
		{name: "bad names, ports and endpoints",
			services: []*Service{
				discoveredService("Orders_1", "Shop", 80, ProtocolHTTP, ok),
				discoveredService("billing", "default", 70000, "GRPC",
					Endpoint{Address: "node-1.local:8080"}, Endpoint{Address: "10.0.0.1:0"}, Endpoint{Address: ""},
					Endpoint{Address: "10.0.0.1:80", Port: "http", Labels: map[string]string{"bad key!": "v"}}),
				discoveredService("", "default", 80, ProtocolHTTP, ok),
			},
			wantErr: true},
		{name: "two discovered services of one name",
			services: []*Service{discoveredService("orders", "default", 80, ProtocolHTTP, ok), discoveredService("orders", "default", 81, ProtocolHTTP)},
			wantErr:  true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantSet, wantErr := LoadFiles(slices.Concat(asDocuments(t, tt.services), tt.files)...)
			if (wantErr != nil) != tt.wantErr {
				t.Fatalf("documents: error %v, want an error: %v", wantErr, tt.wantErr)
			}
			in := Input{Services: tt.services, Files: tt.files}
			for _, load := range []struct {
				name string
				f    func(Input) (*Set, error)
			}{{"LoadInput", LoadInput}, {"Cache", NewCache().LoadInput}} {
				gotSet, gotErr := load.f(in)
				if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
					t.Errorf("%s errors:\n%v\nwant (as documents):\n%v", load.name, gotErr, wantErr)
				}
				if got, want := comparable(gotSet), comparable(wantSet); got != want {
					t.Errorf("%s set:\n%s\nwant (as documents):\n%s", load.name, got, want)
				}
			}
		})
	}
}

// TestCheckEndpointsApart: the definitions of Services without their
// endpoints and CheckEndpoints of each, merged in file and line order,
// report what a load of the whole Services reports.
func TestCheckEndpointsApart(t *testing.T) {
	t.Parallel()
	services := []*Service{
		discoveredService("orders", "default", 80, ProtocolHTTP, Endpoint{Address: "10.0.0.1:8080"}, Endpoint{Address: "node-1:80"}),
		discoveredService("billing", "default", 0, ProtocolHTTP, Endpoint{Address: "10.0.0.1:99999", Labels: map[string]string{"-x": "y"}}),
		discoveredService("ok", "default", 80, ProtocolHTTP, Endpoint{Address: "10.0.0.3:80"}),
	}
	_, want := LoadInput(Input{Services: services})
	var definitions []*Service
	var errs ErrorList
	for _, s := range services {
		d := *s
		d.Spec.Endpoints = nil
		definitions = append(definitions, &d)
		errs = append(errs, CheckEndpoints(s)...)
	}
	_, err := LoadInput(Input{Services: definitions})
	var list ErrorList
	if err != nil && !errorsAs(err, &list) {
		t.Fatalf("LoadInput: %T %v", err, err)
	}
	list = append(list, errs...)
	slices.SortStableFunc(list, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	if want == nil || list.Error() != want.Error() {
		t.Errorf("apart:\n%v\nwhole:\n%v", list, want)
	}
	if got := CheckEndpoints(services[2]); got != nil {
		t.Errorf("CheckEndpoints of good endpoints = %v", got)
	}
}

func errorsAs(err error, list *ErrorList) bool {
	l, ok := err.(ErrorList)
	*list = l
	return ok
}

// TestKindRegistry: every kind listed is decoded, named in the message
// about an unknown kind, and found by its aliases; kinds not supported yet
// are refused as such.
func TestKindRegistry(t *testing.T) {
	t.Parallel()
	if got, want := Kinds(), []string{KindGateway, KindHTTPRoute, KindGRPCRoute, KindService, KindSecurityPolicy, KindTrafficPolicy, KindMeshConfig, KindGatewayClass, KindReferenceGrant, KindNamespace, KindListenerSet, KindSecret, KindACMEIssuer, KindBackendTLSPolicy, KindConfigMap, KindTCPRoute, KindTLSRoute}; !reflect.DeepEqual(got, want) {
		t.Errorf("Kinds() = %v, want %v", got, want)
	}
	for _, tt := range []struct{ typed, want string }{
		{"gw", KindGateway}, {"HTTPRoutes", KindHTTPRoute}, {"grpcroutes", KindGRPCRoute}, {"svc", KindService}, {"service", KindService},
		{"securitypolicies", KindSecurityPolicy}, {"tp", KindTrafficPolicy}, {"MeshConfig", KindMeshConfig}, {"lset", KindListenerSet},
	} {
		if got, ok := LookupKind(tt.typed); !ok || got != tt.want {
			t.Errorf("LookupKind(%q) = %q, %v; want %q", tt.typed, got, ok, tt.want)
		}
	}
	if _, ok := LookupKind("widget"); ok {
		t.Error("LookupKind(widget) found a kind")
	}
	if got, want := KindsText(), "Gateway, HTTPRoute, GRPCRoute, Service, SecurityPolicy, TrafficPolicy, MeshConfig, GatewayClass, ReferenceGrant, Namespace, ListenerSet, Secret, ACMEIssuer, BackendTLSPolicy, ConfigMap, TCPRoute or TLSRoute"; got != want {
		t.Errorf("KindsText() = %q, want %q", got, want)
	}
	for _, k := range kinds {
		if k.decode == nil || k.add == nil || k.validate == nil {
			t.Errorf("kind %s: incomplete entry", k.name)
		}
		for group, names := range notSupportedYet {
			if slices.Contains(names, k.name) && (group+"/v1" == k.apiVersion || group+"/v1alpha1" == k.apiVersion) {
				t.Errorf("kind %s is both supported and not supported yet", k.name)
			}
		}
	}
}
