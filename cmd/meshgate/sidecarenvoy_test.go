package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

// TestEnvoyAgentServesEnrolledIdentity: `meshgate sidecar --envoy` enrolls
// with the join token at the CA and serves the certificate it obtained
// (and the trust bundle) over SDS on its Unix socket, as an Envoy's
// sds-grpc cluster asks for them.
func TestEnvoyAgentServesEnrolledIdentity(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	const id = "spiffe://meshgate.local/ns/shop/svc/orders"
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: id})
	socket := filepath.Join(t.TempDir(), "sds.sock")

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	role := dataplane.RoleOptions{XDSAddresses: []string{srv.Addr}, Identity: identity.ProxyOptions{Token: tok}}
	go func() {
		ran <- runEnvoyAgent(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), role, "shop", "orders", socket)
	}()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(ctx, 60*time.Second)
	defer callCancel()
	// The server answers once the agent has its certificate; Envoy waits
	// for it (its listeners warm up then), and so does this client.
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(callCtx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sidecar~orders.shop~envoy", UserAgentName: "envoy"},
		TypeUrl: resourcev3.SecretType, ResourceNames: []string{"default", "ROOTCA"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*tlsv3.Secret{}
	for _, r := range resp.Resources {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		got[s.Name] = s
	}
	tc := got["default"].GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("served default: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Errorf("served identity %v, want %s", leaf.URIs, id)
	}
	if err := leaf.CheckSignatureFrom(ca.Root); err != nil {
		t.Errorf("served certificate not from the CA: %v", err)
	}
	if string(got["ROOTCA"].GetValidationContext().GetTrustedCa().GetInlineBytes()) != string(ca.RootPEM) {
		t.Error("ROOTCA is not the CA's trust bundle")
	}
}
