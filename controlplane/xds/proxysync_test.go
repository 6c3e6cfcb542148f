package xds

import (
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/meshgate/meshgate/api/xdsnode"
)

// connectedProxy is the status of the connected proxy id.
func connectedProxy(t *testing.T, s *Server, id string) ProxyStatus {
	t.Helper()
	for _, p := range s.Proxies() {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("proxy %q not connected", id)
	return ProxyStatus{}
}

// TestProxyStatusSyncAndNack: a proxy that accepted the version it is
// served of every type it asks for is in sync; a rejection makes it out of
// sync and is its last NACK (type, the rejected version, the error, when),
// kept once a later version is accepted; a new version not yet accepted is
// out of sync.
func TestProxyStatusSyncAndNack(t *testing.T) {
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
	c.request(resourcev3.ClusterType, nil, nil, "")
	clusters := c.receive(resourcev3.ClusterType)
	c.request(resourcev3.ClusterType, nil, clusters, "")
	c.request(resourcev3.ListenerType, nil, nil, "")
	first := c.receive(resourcev3.ListenerType)
	c.request(resourcev3.ListenerType, nil, first, "")
	waitFor(t, "in sync", func() bool { return connectedProxy(t, s, "gw").InSync })
	st := connectedProxy(t, s, "gw")
	if st.Served[resourcev3.ListenerType] != first.VersionInfo || st.Acked[resourcev3.ListenerType] != first.VersionInfo ||
		st.Served[resourcev3.ClusterType] != clusters.VersionInfo {
		t.Errorf("served %v, acked %v; want listeners at %s, clusters at %s", st.Served, st.Acked, first.VersionInfo, clusters.VersionInfo)
	}
	if st.LastNack != nil || st.Peer == "" || st.Address != st.Peer {
		t.Errorf("last NACK %+v, peer %q, address %q", st.LastNack, st.Peer, st.Address)
	}

	// A new listener version, rejected.
	s.SetModel(ctx, testModel(t, 8080, 9090))
	second := c.receive(resourcev3.ListenerType)
	waitFor(t, "out of sync while the new version is not accepted", func() bool { return !connectedProxy(t, s, "gw").InSync })
	c.request(resourcev3.ListenerType, nil, second, "listener default/edge/9090: bind: address already in use")
	waitFor(t, "the NACK recorded", func() bool { return connectedProxy(t, s, "gw").LastNack != nil })
	st = connectedProxy(t, s, "gw")
	nack := st.LastNack
	if nack.TypeURL != resourcev3.ListenerType || nack.Version != second.VersionInfo ||
		nack.Error != "listener default/edge/9090: bind: address already in use" || nack.At.IsZero() {
		t.Errorf("last NACK = %+v, want the listener version %s", nack, second.VersionInfo)
	}
	if st.InSync {
		t.Error("in sync after a NACK")
	}

	// The next version accepted: in sync, the NACK still shown. (After
	// the NACK the rejected version may be sent again first: each response
	// is accepted until the one of the served version.)
	s.SetModel(ctx, testModel(t, 8080, 9191))
	for {
		resp := c.receive(resourcev3.ListenerType)
		c.request(resourcev3.ListenerType, nil, resp, "")
		if resp.VersionInfo != second.VersionInfo {
			break
		}
	}
	waitFor(t, "in sync again", func() bool { return connectedProxy(t, s, "gw").InSync })
	if got := connectedProxy(t, s, "gw").LastNack; got == nil || got.Version != second.VersionInfo {
		t.Errorf("last NACK after a later ACK = %+v, want kept", got)
	}
}

// TestNackIsNotAnsweredWithTheSameVersion: a proxy that rejects a version
// is not sent that version again at once (it would reject it again: a
// loop of responses and NACKs), but after nackRetry (the rejection may be
// transient), unless a new version comes first.
func TestNackIsNotAnsweredWithTheSameVersion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		nackRetry time.Duration
	}{
		{"a new version first", time.Hour},
		{"the rejected version again after nackRetry", time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testNackAnswer(t, tt.nackRetry)
		})
	}
}

func testNackAnswer(t *testing.T, nackRetry time.Duration) {
	ctx := t.Context()
	s := New(ctx, nil)
	s.cache.nackRetry = nackRetry
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
	s.SetModel(ctx, testModel(t, 8080, 9090))
	rejected := c.receive(resourcev3.ListenerType)
	// A NACK as Envoy sends it: the version it keeps, the rejected nonce.
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: resourcev3.ListenerType, VersionInfo: first.VersionInfo,
		ResponseNonce: rejected.Nonce, ErrorDetail: &status.Status{Code: 3, Message: "bind: address already in use"}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	if nackRetry < time.Hour {
		if again := c.receive(resourcev3.ListenerType); again.VersionInfo != rejected.VersionInfo {
			t.Fatalf("after nackRetry: version %s, want the rejected %s again", again.VersionInfo, rejected.VersionInfo)
		}
		return
	}
	waitFor(t, "the NACK recorded", func() bool { return connectedProxy(t, s, "gw").LastNack != nil })
	s.SetModel(ctx, testModel(t, 8080, 9191))
	if next := c.receive(resourcev3.ListenerType); next.VersionInfo == rejected.VersionInfo {
		t.Fatalf("the rejected version %s was sent again", rejected.VersionInfo)
	}
}
