package xds

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/internal/testutil"
	"github.com/meshgate/meshgate/policy"
)

func testModel(t *testing.T, gatewayPorts ...int32) *model.Model {
	t.Helper()
	gw := &policy.Gateway{}
	gw.Name = "edge"
	for _, p := range gatewayPorts {
		gw.Spec.Listeners = append(gw.Spec.Listeners, gwapiv1.Listener{Name: "http", Port: p, Protocol: gwapiv1.HTTPProtocolType})
	}
	port := int32(80)
	r := &policy.HTTPRoute{}
	r.Name = "web"
	r.Spec.ParentRefs = []gwapiv1.ParentReference{{Name: "edge"}}
	r.Spec.Rules = []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: "orders", Port: &port},
	}}}}}
	m, err := model.Compile(&policy.Set{
		Gateways:   []*policy.Gateway{gw},
		HTTPRoutes: []*policy.HTTPRoute{r},
		Services: []*policy.Service{{Name: "orders", Spec: policy.ServiceSpec{
			Ports:     []policy.ServicePort{{Port: 80}},
			Endpoints: []policy.Endpoint{{Address: "127.0.0.1:21011"}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startServer serves s on a loopback port and returns a client connection.
func startServer(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

func testNode(t *testing.T, id string, meta xdsnode.Metadata) *corev3.Node {
	t.Helper()
	return &corev3.Node{Id: id, Metadata: meta.Struct()}
}

type adsClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
}

func (c *adsClient) request(typeURL string, names []string, ack *discoveryv3.DiscoveryResponse, nack string) {
	c.t.Helper()
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typeURL, ResourceNames: names}
	if ack != nil {
		req.VersionInfo, req.ResponseNonce = ack.VersionInfo, ack.Nonce
		if nack != "" {
			req.VersionInfo = ""
			req.ErrorDetail = &status.Status{Code: 3, Message: nack}
		}
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", typeURL, err)
	}
}

func (c *adsClient) receive(typeURL string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("receive %s: %v", typeURL, err)
	}
	if resp.TypeUrl != typeURL {
		c.t.Fatalf("received %s, want %s", resp.TypeUrl, typeURL)
	}
	return resp
}

func names[M interface {
	proto.Message
	GetName() string
}](t *testing.T, resp *discoveryv3.DiscoveryResponse, newM func() M) []string {
	t.Helper()
	var out []string
	for _, a := range resp.Resources {
		m := newM()
		if err := a.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.GetName())
	}
	slices.Sort(out)
	return out
}

// waitFor is testutil.Eventually for a boolean condition.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, what, testutil.Holds(cond))
}

func TestADSGatewayAndSidecar(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	conn := startServer(t, s)
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	tests := []struct {
		name          string
		node          xdsnode.Metadata
		wantClusters  []string
		wantListeners []string
	}{
		{
			name:          "gateway",
			node:          xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"},
			wantClusters:  []string{"default/orders:80"},
			wantListeners: []string{"default/edge/8080"},
		},
		{
			name:          "sidecar",
			node:          xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000", AdminAddress: "127.0.0.1:15101"},
			wantClusters:  []string{"default/orders:80", "inbound|orders"},
			wantListeners: []string{"inbound", "outbound"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			streamCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := client.StreamAggregatedResources(streamCtx)
			if err != nil {
				t.Fatal(err)
			}
			c := &adsClient{t: t, stream: stream, node: testNode(t, tt.name+"-1", tt.node)}
			c.request(resourcev3.ClusterType, nil, nil, "")
			clusters := c.receive(resourcev3.ClusterType)
			if got := names(t, clusters, func() *clusterv3.Cluster { return &clusterv3.Cluster{} }); !slices.Equal(got, tt.wantClusters) {
				t.Errorf("clusters = %v, want %v", got, tt.wantClusters)
			}
			c.request(resourcev3.ClusterType, nil, clusters, "")
			c.request(resourcev3.ListenerType, nil, nil, "")
			listeners := c.receive(resourcev3.ListenerType)
			if got := names(t, listeners, func() *listenerv3.Listener { return &listenerv3.Listener{} }); !slices.Equal(got, tt.wantListeners) {
				t.Errorf("listeners = %v, want %v", got, tt.wantListeners)
			}
			c.request(resourcev3.ListenerType, nil, listeners, "listener \"x\": not supported")

			proxy := func() (ProxyStatus, bool) {
				for _, p := range s.Proxies() {
					if p.ID == tt.name+"-1" {
						return p, true
					}
				}
				return ProxyStatus{}, false
			}
			waitFor(t, "ACK and NACK to be recorded", func() bool {
				p, ok := proxy()
				return ok && p.Acked[resourcev3.ClusterType] == clusters.VersionInfo && p.Nacked[resourcev3.ListenerType] != ""
			})
			p, _ := proxy()
			if p.Role != tt.node.Role || p.Namespace != "default" || p.ConnectedAt.IsZero() || p.AdminAddress != tt.node.AdminAddress {
				t.Errorf("proxy status = %+v", p)
			}
			if res, _, ok := s.Resources(p.ID); !ok || len(res.Listeners) != len(tt.wantListeners) {
				t.Errorf("Resources(%s) = %v, %v", p.ID, res, ok)
			}
			cancel()
			waitFor(t, "the closed stream's proxy to be forgotten", func() bool { _, ok := proxy(); return !ok })
		})
	}
}

func TestModelChangePushesNewVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	conn := startServer(t, s)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: testNode(t, "gw", xdsnode.Metadata{Role: xdsnode.RoleGateway, Gateway: "edge"})}
	c.request(resourcev3.ListenerType, nil, nil, "")
	first := c.receive(resourcev3.ListenerType)
	c.request(resourcev3.ListenerType, nil, first, "")

	// The same model again changes nothing; a new port sends new listeners.
	s.SetModel(ctx, testModel(t, 8080))
	s.SetModel(ctx, testModel(t, 8080, 9090))
	second := c.receive(resourcev3.ListenerType)
	if second.VersionInfo == first.VersionInfo {
		t.Errorf("version did not change: %s", second.VersionInfo)
	}
	if got := names(t, second, func() *listenerv3.Listener { return &listenerv3.Listener{} }); !slices.Equal(got, []string{"default/edge/8080", "default/edge/9090"}) {
		t.Errorf("listeners = %v", got)
	}
}

func TestUnknownRoleGetsEmptyConfig(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	conn := startServer(t, s)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: testNode(t, "odd", xdsnode.Metadata{Role: "router"})}
	c.request(resourcev3.ListenerType, nil, nil, "")
	if resp := c.receive(resourcev3.ListenerType); len(resp.Resources) != 0 {
		t.Errorf("unknown role got %d listeners", len(resp.Resources))
	}
}
