package sds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

// source is a Source whose certificate a test replaces.
type source struct {
	cert   atomic.Pointer[tls.Certificate]
	bundle []byte
}

func (s *source) Certificate() *tls.Certificate { return s.cert.Load() }
func (s *source) TrustBundlePEM() []byte        { return s.bundle }

// startServer serves src on a Unix socket until the test ends and returns
// an SDS client connected to it.
func startServer(t *testing.T, src Source) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sds.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Source: src, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// secretsOf decodes a response's secrets by name.
func secretsOf(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	if resp.TypeUrl != resourcev3.SecretType {
		t.Fatalf("type_url %q, want %q", resp.TypeUrl, resourcev3.SecretType)
	}
	out := map[string]*tlsv3.Secret{}
	for _, r := range resp.Resources {
		s := &tlsv3.Secret{}
		if err := r.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Errorf("secret %q: %v", s.Name, err)
		}
		out[s.Name] = s
	}
	return out
}

// leafOf parses the served certificate chain's leaf and checks the key is
// its pair.
func leafOf(t *testing.T, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	tc := s.GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: chain and key do not pair: %v", s.Name, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestServesIdentityAndPushesRenewal: an Envoy-like client asking for
// "default" and "ROOTCA" over a real Unix socket gets the certificate (the
// chain and its key, PEM) and the trust bundle, then the renewed
// certificate after an ACK, on the same stream.
func TestServesIdentityAndPushesRenewal(t *testing.T) {
	t.Parallel()
	ca := meshtlstest.NewCA(t, "root")
	const id = "spiffe://meshgate.local/ns/default/svc/orders"
	src := &source{bundle: ca.PEM}
	src.cert.Store(ca.Issue(t, id))
	client := startServer(t, src)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "sidecar~orders~envoy-1", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType,
		ResourceNames: []string{IdentitySecretName, RootCASecretName}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := secretsOf(t, resp)
	if len(got) != 2 || got[IdentitySecretName] == nil || got[RootCASecretName] == nil {
		t.Fatalf("secrets %v, want default and ROOTCA", got)
	}
	first := leafOf(t, got[IdentitySecretName])
	if len(first.URIs) != 1 || first.URIs[0].String() != id {
		t.Errorf("served certificate's URIs %v, want %s", first.URIs, id)
	}
	if block, _ := pem.Decode(got[RootCASecretName].GetValidationContext().GetTrustedCa().GetInlineBytes()); block == nil {
		t.Error("ROOTCA has no PEM trust bundle")
	}

	// ACK, then renew: the next response is the new certificate.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, VersionInfo: resp.VersionInfo,
		ResponseNonce: resp.Nonce, ResourceNames: []string{IdentitySecretName, RootCASecretName}}); err != nil {
		t.Fatal(err)
	}
	src.cert.Store(ca.Issue(t, id))
	resp2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp2.VersionInfo == resp.VersionInfo {
		t.Errorf("renewal kept version %q", resp.VersionInfo)
	}
	renewed := leafOf(t, secretsOf(t, resp2)[IdentitySecretName])
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("after a renewal the server still serves the first certificate")
	}
}

// TestWaitsForTheFirstCertificate: before the identity has a certificate,
// a request gets no answer (Envoy waits, its listeners not yet warm)
// rather than an empty secret; the first certificate is then served.
func TestWaitsForTheFirstCertificate(t *testing.T) {
	t.Parallel()
	ca := meshtlstest.NewCA(t, "root")
	src := &source{}
	client := startServer(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "x"}, TypeUrl: resourcev3.SecretType,
		ResourceNames: []string{IdentitySecretName}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *discoveryv3.DiscoveryResponse, 1)
	go func() {
		resp, err := stream.Recv()
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	select {
	case resp := <-got:
		t.Fatalf("answered before any certificate: %v", resp)
	default:
	}
	src.cert.Store(ca.Issue(t, "spiffe://meshgate.local/ns/default/svc/orders"))
	resp := <-got
	if s := secretsOf(t, resp); s[IdentitySecretName] == nil {
		t.Fatalf("secrets %v, want default", s)
	}
}

// TestListenReplacesStaleSocket: a socket file left by a previous run is
// replaced; a regular file is not.
func TestListenReplacesStaleSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sds.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crashed process leaves the file behind.
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	_ = ln.Close()
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	_ = ln2.Close()

	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(file); err == nil {
		_ = ln.Close()
		t.Fatal("Listen replaced a regular file")
	}
}
