package xds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/policy"
)

// preferLocalSet is meshSet with payments in two zones and a
// TrafficPolicy preferring local endpoints.
func preferLocalSet() *policy.Set {
	set := meshSet()
	set.Services[1].Spec.Endpoints = []policy.Endpoint{
		{Address: "127.0.0.1:22011", Labels: map[string]string{policy.LabelZone: "a"}},
		{Address: "127.0.0.2:22011", Labels: map[string]string{policy.LabelZone: "b"}},
	}
	set.TrafficPolicies = []*policy.TrafficPolicy{{Name: "payments-local", Spec: policy.TrafficPolicySpec{
		TargetRefs:   []policy.TrafficTargetRef{{Kind: policy.KindService, Name: "payments"}},
		LoadBalancer: &policy.LoadBalancer{Locality: &policy.LocalityLB{PreferLocal: true}},
	}}}
	return set
}

// TestPreferLocalEndpointChangeIsPerProxy: an endpoint change of a
// cluster that prefers local endpoints does not take the shared fast path
// (each proxy's assignment has its own priorities): every node is
// translated, and each has what a fresh translation for its zone gives,
// its zone at priority 0.
func TestPreferLocalEndpointChangeIsPerProxy(t *testing.T) {
	t.Parallel()
	before := compileSet(t, preferLocalSet())
	set := preferLocalSet()
	set.Services[1].Spec.Endpoints[1].Address = "127.0.0.3:22011"
	after := compileSet(t, set)
	if _, ok := after.EndpointChanges(before); !ok {
		t.Fatal("the change is not endpoint-only")
	}
	s := New(t.Context(), nil)
	s.SetModel(t.Context(), before)
	zones := map[string]string{"in-a": "a", "in-b": "b"}
	streamID := int64(0)
	for id, zone := range zones {
		streamID++
		node := testNode(t, id, xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"})
		node.Locality = &corev3.Locality{Zone: zone}
		if err := s.onStreamRequest(streamID, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
	}
	counts := s.UpdateCounts()
	s.SetModel(t.Context(), after)
	if got := s.UpdateCounts(); got.Full != counts.Full+1 || got.EndpointsOnly != counts.EndpointsOnly {
		t.Errorf("update counts %+v -> %+v: want a full update", counts, got)
	}
	for id, zone := range zones {
		res, _, _ := s.Resources(id)
		fresh, err := translate.NewCache(after, translate.Inputs{}).Translate(s.nodes[id].info)
		if err != nil {
			t.Fatal(err)
		}
		assertSameMessages(t, id, res.Messages(), fresh.Messages())
		for _, cla := range res.Endpoints {
			if cla.GetClusterName() != "default/payments:80" {
				continue
			}
			for _, l := range cla.GetEndpoints() {
				if local := l.GetLocality().GetZone() == zone; local != (l.GetPriority() == 0) {
					t.Errorf("node %s in zone %s: locality %s at priority %d", id, zone, l.GetLocality().GetZone(), l.GetPriority())
				}
			}
		}
	}
}
