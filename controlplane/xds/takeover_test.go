package xds

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/translate"
)

// certOf plays the authorizer of the real control plane: the "certificate"
// of a stream is the service its metadata names, except that the stream of a
// node whose metadata says "attacker" always holds the attacker's.
func certOf(_ context.Context, node *corev3.Node) (ProxyIdentity, error) {
	return ProxyIdentity{SPIFFEID: "spiffe://meshgate.local/ns/default/svc/" + translate.NodeInfoFromNode(node).Name()}, nil
}

// firstAnswer sends one CDS request as node on a new stream and returns the
// stream and the status of its first answer.
func firstAnswer(t *testing.T, client discoveryv3.AggregatedDiscoveryServiceClient, node *corev3.Node) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, codes.Code) {
	t.Helper()
	stream, err := client.StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	_, err = stream.Recv()
	return stream, status.Code(err)
}

// TestNodeIDTakeover: a proxy cannot take the node id (the key of its
// configuration) of a connected proxy with another identity or metadata.
func TestNodeIDTakeover(t *testing.T) {
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	s.SetAuthorizer(certOf)
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(startServer(t, s))

	victim := testNode(t, "sidecar~orders~host-1", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"})
	if _, code := firstAnswer(t, client, victim); code != codes.OK {
		t.Fatalf("victim: %s", code)
	}
	squatter := testNode(t, "sidecar~orders~host-1", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "attacker", InboundAddress: "127.0.0.1:21011", AppAddress: "10.66.66.66:80"})
	if _, code := firstAnswer(t, client, squatter); code != codes.PermissionDenied {
		t.Fatalf("a second proxy with the victim's node id: %s, want PermissionDenied", code)
	}
	// The same proxy reconnecting (same identity and metadata) is welcome.
	if _, code := firstAnswer(t, client, victim); code != codes.OK {
		t.Fatalf("the same proxy on a second stream: %s", code)
	}
}

// TestNodeSwitchMidStream: once a stream is authorized as one node, a later
// request carrying another node closes it.
func TestNodeSwitchMidStream(t *testing.T) {
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	s.SetAuthorizer(certOf)
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(startServer(t, s))

	attacker := testNode(t, "sidecar~attacker~1", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "attacker", InboundAddress: "127.0.0.1:1", AppAddress: "127.0.0.1:2"})
	stream, code := firstAnswer(t, client, attacker)
	if code != codes.OK {
		t.Fatalf("attacker's own node: %s", code)
	}
	victim := testNode(t, "sidecar~orders~host-1", xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"})
	_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: victim, TypeUrl: resourcev3.ListenerType})
	for {
		resp, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("after switching nodes: %v, want PermissionDenied", err)
			}
			return
		}
		if resp.GetTypeUrl() == resourcev3.ListenerType {
			t.Fatalf("the stream received listeners after switching to another node")
		}
	}
}
