package gateway

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

// TestNewIdentityOptions: the gateway asks for its own identity
// (identity.ForProxy decides the rest, tested there).
func TestNewIdentityOptions(t *testing.T) {
	t.Parallel()
	tok := identitytest.NewCA(t, "meshgate.local").Token(t)
	opts := Options{Name: "edge", Namespace: "prod", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{"127.0.0.1:15010"}, Identity: identity.ProxyOptions{Token: tok}}}
	gw, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gw.Identity().SPIFFEID(), "spiffe://meshgate.local/ns/prod/svc/edge"; got != want {
		t.Errorf("SPIFFE ID %s, want %s", got, want)
	}
	opts.Identity.Token = ""
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "meshgate token create --service edge --namespace prod") {
		t.Errorf("without a token: %v", err)
	}
}

// xdsStream is what a fake ADS server saw of one stream.
type xdsStream struct {
	peerID string
	node   *corev3.Node
}

// adsRecorder is an ADS server that records each stream's client identity
// and node, and sends nothing.
type adsRecorder struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	streams chan xdsStream
}

func (a *adsRecorder) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	seen := xdsStream{node: req.GetNode()}
	if p, ok := peer.FromContext(stream.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			seen.peerID = info.State.VerifiedChains[0][0].URIs[0].String()
		}
	}
	select {
	case a.streams <- seen:
	default:
	}
	<-stream.Context().Done()
	return nil
}

func TestRunConnectsToXDSWithItsIdentity(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, "meshgate.local")
	tok := ca.Token(t)
	const wantID = "spiffe://meshgate.local/ns/default/svc/edge"
	ads := &adsRecorder{streams: make(chan xdsStream, 4)}
	cp := identitytest.StartServer(t, identitytest.ServerOptions{
		CA: ca, Token: tok, BoundID: wantID,
		Register: func(s *grpc.Server) { discoveryv3.RegisterAggregatedDiscoveryServiceServer(s, ads) },
	})
	gw, err := New(Options{Name: "edge", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{cp.Addr}, AdminAddress: "127.0.0.1:0", Logger: quietLogger(), Identity: identity.ProxyOptions{Token: tok}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	select {
	case seen := <-ads.streams:
		if seen.peerID != wantID {
			t.Errorf("xDS client certificate %q, want %s", seen.peerID, wantID)
		}
		if got := xdsnode.Decode(seen.node.GetMetadata()).Gateway; got != "edge" {
			t.Errorf("node metadata gateway = %q", got)
		}
	case err := <-done:
		t.Fatalf("Run returned before connecting to xDS: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("no xDS stream within 15 s")
	}
	if calls := cp.Requests(); len(calls) != 1 || calls[0].Request.GetToken() != tok {
		t.Errorf("CA saw %d Sign calls, want one with the token", len(calls))
	}
	if gw.Identity().Certificate() == nil || gw.Identity().NotAfter().IsZero() {
		t.Error("no certificate while running")
	}
}

func TestRunFailsWhenRefused(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, "meshgate.local")
	cp := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: ca.Token(t), BoundID: "spiffe://meshgate.local/ns/default/svc/edge"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Run(ctx, Options{Name: "edge", RoleOptions: dataplane.RoleOptions{XDSAddresses: []string{cp.Addr}, AdminAddress: "127.0.0.1:0", Logger: quietLogger(), Identity: identity.ProxyOptions{Token: ca.Token(t)}}})
	if err == nil || !strings.Contains(err.Error(), "refused the join token") || ctx.Err() != nil {
		t.Fatalf("Run() = %v, want a prompt refusal of the join token", err)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
