package xds

import (
	"context"
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"

	"github.com/meshgate/meshgate/controlplane/translate"
)

func cla(name string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		}}}},
	}}}
}

func responseNames(resp cachev3.Response) []string {
	out, _ := resp.GetDiscoveryResponse()
	var got []string
	for _, a := range out.GetResources() {
		m, _ := a.UnmarshalNew()
		got = append(got, cachev3.GetResourceName(m))
	}
	return got
}

// TestCacheSendsOnlyChangedNamedResources: CDS is whole in every response;
// EDS carries only the assignments the stream lacks in their current version.
func TestCacheSendsOnlyChangedNamedResources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	enc := newEncoder()
	build := func(portB uint32) *nodeSnapshot {
		snap, _, err := enc.snapshot(&translate.Resources{
			Clusters:  []*clusterv3.Cluster{{Name: "a"}, {Name: "b"}},
			Endpoints: []*endpointv3.ClusterLoadAssignment{cla("a", 1), cla("b", portB)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	c := newSnapshotCache()
	node := &corev3.Node{Id: "n"}
	if err := c.setSnapshot(ctx, "n", build(2)); err != nil {
		t.Fatal(err)
	}
	out := make(chan cachev3.Response, 8)
	subs := map[string]streamv3.Subscription{
		resourcev3.ClusterType:  streamv3.NewSotwSubscription(nil, true),
		resourcev3.EndpointType: streamv3.NewSotwSubscription([]string{"a", "b"}, false),
	}
	request := func(typeURL, version string, resourceNames []string) {
		t.Helper()
		sub := subs[typeURL]
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, VersionInfo: version, ResourceNames: resourceNames}
		if _, err := c.CreateWatch(req, &sub, out); err != nil {
			t.Fatal(err)
		}
		subs[typeURL] = sub
	}
	receive := func(typeURL string) (string, []string) {
		t.Helper()
		select {
		case resp := <-out:
			if resp.GetRequest().GetTypeUrl() != typeURL {
				t.Fatalf("response of type %s, want %s", resp.GetRequest().GetTypeUrl(), typeURL)
			}
			sub := subs[typeURL]
			sub.SetReturnedResources(resp.GetReturnedResources())
			subs[typeURL] = sub
			return resp.GetResponseVersion(), responseNames(resp)
		default:
			t.Fatalf("no %s response", typeURL)
		}
		return "", nil
	}
	expectNone := func() {
		t.Helper()
		select {
		case resp := <-out:
			t.Fatalf("unexpected %s response %v", resp.GetRequest().GetTypeUrl(), responseNames(resp))
		default:
		}
	}

	request(resourcev3.ClusterType, "", nil)
	cdsVersion, got := receive(resourcev3.ClusterType)
	if len(got) != 2 {
		t.Fatalf("first CDS = %v, want both clusters", got)
	}
	request(resourcev3.EndpointType, "", []string{"a", "b"})
	edsVersion, got := receive(resourcev3.EndpointType)
	if len(got) != 2 {
		t.Fatalf("first EDS = %v, want both assignments", got)
	}
	// ACKs: nothing new, the watches stay open.
	request(resourcev3.ClusterType, cdsVersion, nil)
	request(resourcev3.EndpointType, edsVersion, []string{"a", "b"})
	expectNone()

	// b's endpoint moves: EDS carries only b; CDS did not change.
	if err := c.setSnapshot(ctx, "n", build(3)); err != nil {
		t.Fatal(err)
	}
	newVersion, got := receive(resourcev3.EndpointType)
	if newVersion == edsVersion || len(got) != 1 || got[0] != "b" {
		t.Fatalf("EDS after b moved = %s %v, want a new version with b only", newVersion, got)
	}
	expectNone()
	if known := subs[resourcev3.EndpointType].ReturnedResources(); len(known) != 2 {
		t.Fatalf("returned resources after a partial response = %v, want a and b", known)
	}

	// The stream drops b, then subscribes to it again with the same
	// version: b was forgotten, so it is sent again.
	resubscribe := func(names ...string) {
		sub := subs[resourcev3.EndpointType]
		sub.SetResourceSubscription(names)
		subs[resourcev3.EndpointType] = sub
		request(resourcev3.EndpointType, newVersion, names)
	}
	resubscribe("a")
	expectNone()
	resubscribe("a", "b")
	if _, got := receive(resourcev3.EndpointType); len(got) != 1 || got[0] != "b" {
		t.Fatalf("EDS after subscribing to b again = %v, want b", got)
	}
	resubscribe("a", "b")
	expectNone()
}

// TestDeltaResponseEqualsFullComparison: the answer to a stream up to date
// with the previous EDS snapshot, taken from the endpoint-only update's list
// of replaced resources, is the one the resource-by-resource comparison
// gives, returned resources included; a stream behind takes the comparison.
func TestDeltaResponseEqualsFullComparison(t *testing.T) {
	t.Parallel()
	enc := newEncoder()
	encode := func(m *endpointv3.ClusterLoadAssignment) *encoded {
		e, err := enc.encode(resourcev3.EndpointType, m.ClusterName, m)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	a, b, c := encode(cla("a", 1)), encode(cla("b", 2)), encode(cla("c", 3))
	prev := enc.typeSnapshot([]*encoded{a, b, c})
	newB := encode(cla("b", 20))
	swap := swapEndpoints(prev, map[string]*encoded{"b": newB})
	if swap == nil || swap.ts.prevVersion != prev.version || len(swap.ts.changed) != 1 {
		t.Fatalf("swap = %+v", swap)
	}
	plain := &typeSnapshot{version: swap.ts.version, list: swap.ts.list} // without the hint

	tests := []struct {
		name       string
		subscribed []string
		version    string
		returned   map[string]string
	}{
		{"up to date, subscribes to b", []string{"a", "b", "c"}, prev.version, map[string]string{"a": a.hash, "b": b.hash, "c": c.hash}},
		{"up to date, not subscribed to b", []string{"a", "c"}, prev.version, map[string]string{"a": a.hash, "c": c.hash}},
		{"behind", []string{"a", "b", "c"}, "older", map[string]string{"a": "x", "b": b.hash, "c": c.hash}},
		{"new subscription", []string{"a", "b", "c"}, prev.version, map[string]string{"a": a.hash, "c": c.hash}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			answer := func(ts *typeSnapshot) (string, []string, map[string]string) {
				sub := streamv3.NewSotwSubscription(tt.subscribed, false)
				sub.SetReturnedResources(maps.Clone(tt.returned))
				req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: tt.version, ResourceNames: tt.subscribed}
				resp := respond(req, sub, &nodeSnapshot{types: map[string]*typeSnapshot{resourcev3.EndpointType: ts}})
				if resp == nil {
					return "", nil, nil
				}
				return resp.GetResponseVersion(), responseNames(resp), resp.GetReturnedResources()
			}
			gotVersion, gotNames, gotReturned := answer(swap.ts)
			wantVersion, wantNames, wantReturned := answer(plain)
			if gotVersion != wantVersion || !slices.Equal(gotNames, wantNames) || !maps.Equal(gotReturned, wantReturned) {
				t.Errorf("with the hint: %s %v %v\nwithout: %s %v %v", gotVersion, gotNames, gotReturned, wantVersion, wantNames, wantReturned)
			}
		})
	}
}
