package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/discovery"
	"github.com/meshgate/meshgate/policy"
)

// catalog applies transaction operations as Consul does (node set, service
// set by node and ID) and returns the health entries of every service, by
// name; instances without checks are passing.
func catalog(t *testing.T, ops api.TxnOps) map[string][]*api.ServiceEntry {
	t.Helper()
	nodes := map[string]*api.Node{}
	type key struct{ node, id string }
	instances := map[key]api.AgentService{}
	var order []key
	for i, op := range ops {
		switch {
		case op.Node != nil && op.Node.Verb == api.NodeSet:
			n := op.Node.Node
			nodes[n.Node] = &n
		case op.Service != nil && op.Service.Verb == api.ServiceSet:
			if nodes[op.Service.Node] == nil {
				t.Fatalf("op %d: service %s on unregistered node %q", i, op.Service.Service.ID, op.Service.Node)
			}
			k := key{op.Service.Node, op.Service.Service.ID}
			if _, ok := instances[k]; !ok {
				order = append(order, k)
			}
			instances[k] = op.Service.Service
		default:
			t.Fatalf("op %d: unexpected operation %+v", i, op)
		}
	}
	out := map[string][]*api.ServiceEntry{}
	for _, k := range order {
		svc := instances[k]
		out[svc.Service] = append(out[svc.Service], &api.ServiceEntry{Node: nodes[k.node], Service: &svc})
	}
	return out
}

// discoveredFiles are the Services the control plane discovers from the
// catalog that ops build (discovery.ServiceFromEntries), as the policy
// documents it validates with the policy files (controlplane's
// serviceFiles).
func discoveredFiles(t *testing.T, ops api.TxnOps) []policy.File {
	t.Helper()
	entries := catalog(t, ops)
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	slices.Sort(names)
	var files []policy.File
	for _, name := range names {
		svc := discovery.ServiceFromEntries(name, entries[name], false)
		if svc == nil {
			t.Fatalf("service %s not discovered", name)
		}
		ps := svc.PolicyService()
		data, err := json.Marshal(map[string]any{
			"apiVersion": policy.MeshgateAPIVersion,
			"kind":       policy.KindService,
			"metadata":   map[string]string{"name": ps.Name, "namespace": ps.Namespace},
			"spec":       ps.Spec,
		})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, policy.File{Name: svc.Source, Data: data})
	}
	return files
}

// TestConsulRegistrations checks the registration payload: transactions of
// at most 64 operations, the node first, then both endpoints of every
// service at endpointAddr's addresses with meta meshgate-port 80, so that
// discovery maps each to a port-80 Service; and the endpoint change
// replaces endpoint 0 of svc-0000 (same instance ID) at its new address.
func TestConsulRegistrations(t *testing.T) {
	t.Parallel()
	const n = 100
	batches := consulRegistrations(n)
	if want := (1 + 2*n + consulTxnMaxOps - 1) / consulTxnMaxOps; len(batches) != want {
		t.Fatalf("%d transactions, want %d", len(batches), want)
	}
	for i, b := range batches {
		if len(b) == 0 || len(b) > consulTxnMaxOps {
			t.Fatalf("transaction %d has %d operations, want 1-%d", i, len(b), consulTxnMaxOps)
		}
	}
	ops := slices.Concat(batches...)
	if ops[0].Node == nil || ops[0].Node.Node.Node != consulNode {
		t.Fatalf("first operation %+v, want node %s", ops[0], consulNode)
	}
	entries := catalog(t, ops)
	if len(entries) != n {
		t.Fatalf("%d services registered, want %d", len(entries), n)
	}
	for _, i := range []int{0, 1, 42, n - 1} {
		name := serviceName(i)
		d := discovery.ServiceFromEntries(name, entries[name], false)
		if d == nil {
			t.Fatalf("%s not discovered", name)
		}
		svc := d.PolicyService()
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != servicePort || svc.Namespace != namespace {
			t.Fatalf("%s discovered as %+v, want port %d in %s", name, svc, servicePort, namespace)
		}
		if got := clusterName(name); got != svc.Namespace+"/"+svc.Name+":80" {
			t.Fatalf("cluster %s does not match the discovered service", got)
		}
		var addrs []string
		for _, ep := range svc.Spec.Endpoints {
			addrs = append(addrs, ep.Address)
			if ep.Sidecar {
				t.Fatalf("%s: endpoint %s marked sidecar", name, ep.Address)
			}
		}
		if want := []string{endpointAddr(i, 0, 0), endpointAddr(i, 1, 0)}; !slices.Equal(addrs, want) {
			t.Fatalf("%s endpoints %v, want %v", name, addrs, want)
		}
	}

	change := consulEndpointChange()
	if len(change) != 1 || change[0].Service == nil || change[0].Service.Service.ID != "svc-0000-0" {
		t.Fatalf("endpoint change %+v, want one set of svc-0000-0", change)
	}
	after := catalog(t, append(slices.Clone(ops), change...))
	svc := discovery.ServiceFromEntries(serviceName(0), after[serviceName(0)], false).PolicyService()
	var addrs []string
	for _, ep := range svc.Spec.Endpoints {
		addrs = append(addrs, ep.Address)
	}
	if want := []string{endpointAddr(0, 0, 1), endpointAddr(0, 1, 0)}; !slices.Equal(addrs, want) {
		t.Fatalf("after the change svc-0000 endpoints %v, want %v", addrs, want)
	}
	if slices.Contains([]string{endpointAddr(0, 0, 0), endpointAddr(0, 1, 0)}, endpointAddr(0, 0, 1)) {
		t.Fatalf("the moved endpoint %s is already an address of svc-0000: the change's watch would hold before it", endpointAddr(0, 0, 1))
	}

	// The wire form Consul's /v1/txn takes.
	b, err := json.Marshal(change)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Verb":"set"`, `"Node":"xdsload"`, `"Service":"svc-0000"`, `"Address":"127.1.0.0"`, `"meshgate-port":"80"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("txn payload lacks %s: %s", want, b)
		}
	}
}

// TestConsulPolicyHasNoStaticServices: with -endpoints consul the policy
// files define no Service but svc-added, and still name every service in
// routes and SecurityPolicies.
func TestConsulPolicyHasNoStaticServices(t *testing.T) {
	t.Parallel()
	for _, withAdded := range []bool{false, true} {
		files := generatePolicy(10, scopeAuthorized, endpointsConsul, withAdded, 1)
		all := files.services + files.routes + files.security
		kinds := strings.Count(all, "kind: Service\n")
		if want := map[bool]int{false: 0, true: 1}[withAdded]; kinds != want {
			t.Errorf("withAdded=%v: %d Service documents, want %d:\n%s", withAdded, kinds, want, files.services)
		}
		if withAdded && !strings.Contains(files.services, "name: "+addedService) {
			t.Errorf("svc-added is not a static Service:\n%s", files.services)
		}
		if strings.Contains(files.services, endpointAddr(0, 0, 0)) || strings.Contains(files.services, endpointAddr(0, 0, 1)) {
			t.Errorf("svc-0000's endpoints are in the files:\n%s", files.services)
		}
		for i := range 10 {
			if !strings.Contains(files.routes, "name: "+serviceName(i)+", port: 80") ||
				!strings.Contains(files.security, "name: "+serviceName(i)+"}") {
				t.Errorf("%s is not named by a route and a SecurityPolicy", serviceName(i))
			}
		}
	}
}
