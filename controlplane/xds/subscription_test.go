package xds

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/internal/testutil"
)

// subscriptionResources is one resource of every type, named after the
// type; generation changes every resource's content.
func subscriptionResources(generation int) *translate.Resources {
	d := durationpb.New(time.Duration(generation) * time.Second)
	tag := strconv.Itoa(generation)
	return &translate.Resources{
		Listeners: []*listenerv3.Listener{{Name: "listener", ListenerFiltersTimeout: d}},
		Routes:    []*routev3.RouteConfiguration{{Name: "route", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"gen" + tag}}}}},
		Clusters:  []*clusterv3.Cluster{{Name: "cluster", ConnectTimeout: d}},
		Endpoints: []*endpointv3.ClusterLoadAssignment{cla("cluster", uint32(1000+generation))},
		Secrets: []*tlsv3.Secret{{Name: "secret", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "gen" + tag}},
		}}}},
	}
}

// openWatch reports whether the cache holds a watch of node id for typeURL
// opened by the request acknowledging nonce: the stream's ACK was processed
// and answered with nothing.
func (c *snapshotCache) openWatch(id, typeURL, nonce string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[id]
	if !ok {
		return false
	}
	for _, w := range n.watches {
		if w.req.GetTypeUrl() == typeURL && w.req.GetResponseNonce() == nonce {
			return true
		}
	}
	return false
}

// TestOneResponsePerChange opens real ADS streams against go-control-plane's
// server over the cache and, for every type and every way of subscribing
// (wildcard, explicit wildcard, by name, by name with a name that does not
// exist), checks that an ACK is answered by nothing: one response per
// configuration change, however the stream subscribes.
func TestOneResponsePerChange(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cache := newSnapshotCache()
	srv := xdsserver.NewServer(ctx, cache, nil, serverv3.WithOrderedADS())
	g := NewGRPCServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	types := []struct {
		typeURL string
		name    string
	}{
		{resourcev3.ListenerType, "listener"},
		{resourcev3.ClusterType, "cluster"},
		{resourcev3.RouteType, "route"},
		{resourcev3.EndpointType, "cluster"},
		{resourcev3.SecretType, "secret"},
	}
	modes := []struct {
		name  string
		names func(resource string) []string
	}{
		{"wildcard", func(string) []string { return nil }},
		{"explicit wildcard", func(string) []string { return []string{"*"} }},
		{"named", func(r string) []string { return []string{r} }},
		{"named and unknown", func(r string) []string { return []string{r, "unknown"} }},
	}
	for _, typ := range types {
		for _, mode := range modes {
			t.Run(typ.typeURL[len("type.googleapis.com/"):]+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				id := typ.typeURL + "/" + mode.name
				enc := newEncoder()
				set := func(generation int) {
					t.Helper()
					snap, _, err := enc.snapshot(subscriptionResources(generation))
					if err != nil {
						t.Fatal(err)
					}
					if err := cache.setSnapshot(ctx, id, snap); err != nil {
						t.Fatal(err)
					}
				}
				set(1)
				streamCtx, cancel := context.WithCancel(ctx)
				defer cancel()
				stream, err := client.StreamAggregatedResources(streamCtx)
				if err != nil {
					t.Fatal(err)
				}
				responses := make(chan *discoveryv3.DiscoveryResponse, 16)
				go func() {
					for {
						resp, err := stream.Recv()
						if err != nil {
							close(responses)
							return
						}
						responses <- resp
					}
				}()
				node := &corev3.Node{Id: id}
				names := mode.names(typ.name)
				send := func(version, nonce string) {
					t.Helper()
					req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ.typeURL, ResourceNames: names, VersionInfo: version, ResponseNonce: nonce}
					if err := stream.Send(req); err != nil {
						t.Fatal(err)
					}
				}
				receive := func() *discoveryv3.DiscoveryResponse {
					t.Helper()
					select {
					case resp, ok := <-responses:
						if !ok {
							t.Fatal("stream closed")
						}
						return resp
					case <-time.After(30 * time.Second):
						t.Fatal("no response")
					}
					return nil
				}
				// ackAndExpectSilence acknowledges resp and waits until the
				// server has processed the ACK and opened a watch with it;
				// any response meanwhile is one too many.
				ackAndExpectSilence := func(resp *discoveryv3.DiscoveryResponse) {
					t.Helper()
					send(resp.VersionInfo, resp.Nonce)
					testutil.Eventually(t, 30*time.Second, "the ACK opens a watch", func() error {
						select {
						case extra := <-responses:
							t.Fatalf("a response to the ACK of version %s: version %s with %d resources", resp.VersionInfo, extra.GetVersionInfo(), len(extra.GetResources()))
						default:
						}
						if !cache.openWatch(id, typ.typeURL, resp.Nonce) {
							return errors.New("no watch opened with the ACK's nonce yet")
						}
						return nil
					})
					select {
					case extra := <-responses:
						t.Fatalf("a response to the ACK of version %s: version %s", resp.VersionInfo, extra.GetVersionInfo())
					default:
					}
				}

				send("", "")
				first := receive()
				if len(first.Resources) != 1 {
					t.Fatalf("first response has %d resources, want 1", len(first.Resources))
				}
				ackAndExpectSilence(first)
				set(2)
				second := receive()
				if second.VersionInfo == first.VersionInfo || len(second.Resources) != 1 {
					t.Fatalf("after a change: version %s with %d resources, want a new version (was %s) with 1", second.VersionInfo, len(second.Resources), first.VersionInfo)
				}
				ackAndExpectSilence(second)
				set(2) // the same content: nothing to send
				set(3)
				third := receive()
				if third.VersionInfo == second.VersionInfo {
					t.Fatalf("after a change: version %s, want a new one", third.VersionInfo)
				}
				ackAndExpectSilence(third)
			})
		}
	}
}

// TestUnsubscribedFromEveryName: a stream that subscribed by name and then
// to no name at all gets one answer per version, not one per request.
func TestUnsubscribedFromEveryName(t *testing.T) {
	t.Parallel()
	snap, _, err := newEncoder().snapshot(subscriptionResources(1))
	if err != nil {
		t.Fatal(err)
	}
	for _, typeURL := range []string{resourcev3.ListenerType, resourcev3.ClusterType} {
		sub := streamv3.NewSotwSubscription([]string{"listener", "cluster"}, true)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: []string{"listener", "cluster"}}
		resp := respond(req, sub, snap)
		if resp == nil {
			t.Fatalf("%s: no first response", typeURL)
		}
		sub.SetReturnedResources(resp.GetReturnedResources())
		req.VersionInfo = resp.GetResponseVersion()
		if again := respond(req, sub, snap); again != nil {
			t.Errorf("%s: a response to the ACK of a subscription by name", typeURL)
		}
		sub.SetResourceSubscription([]string{})
		req.ResourceNames = nil
		if again := respond(req, sub, snap); again != nil {
			t.Errorf("%s: a response after unsubscribing from every name, the version unchanged", typeURL)
		}
	}
}
