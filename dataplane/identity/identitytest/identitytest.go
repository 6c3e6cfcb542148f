// Package identitytest is a throwaway certificate authority for tests: a
// self-signed root, and an in-process meshgate.ca.v1 CertificateAuthority
// served over TLS as the control plane serves it (its certificate chain
// includes the root, so join-token pins verify). Tests only.
package identitytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
)

// CA is a throwaway certificate authority: one self-signed root that
// signs leaves directly.
type CA struct {
	TrustDomain string
	Root        *x509.Certificate
	RootPEM     []byte
	// Backdate moves the NotBefore of issued leaves that far into the past,
	// as the control plane's CA does for clock skew (one minute); zero
	// issues leaves valid from now.
	Backdate time.Duration
	key      *ecdsa.PrivateKey
}

// NewCA returns a CA for trustDomain.
func NewCA(t testing.TB, trustDomain string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"test mesh"}, CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{
		TrustDomain: trustDomain,
		Root:        root,
		RootPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:         key,
	}
}

// Issue signs a leaf for id and pub valid from now (minus Backdate) until
// now plus ttl.
func (ca *CA) Issue(id string, pub crypto.PublicKey, ttl time.Duration) (*x509.Certificate, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-ca.Backdate),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Serving returns a TLS certificate for id whose chain includes the root,
// as the control plane presents it.
func (ca *CA) Serving(t testing.TB, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(id, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Root.Raw}, PrivateKey: key, Leaf: leaf}
}

// Pool is a cert pool of the given CAs' roots.
func Pool(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Root)
	}
	return p
}

// SignCall is one Sign call as the server saw it.
type SignCall struct {
	Request *cav1.SignRequest
	// PeerID is the client certificate's SPIFFE ID, "" without one.
	PeerID string
}

// Server is an in-process meshgate.ca.v1 CertificateAuthority over TLS
// that signs with a CA, accepting one join token bound to boundID, or a
// client certificate from its CA for the certificate's own identity.
type Server struct {
	cav1.UnimplementedCertificateAuthorityServer
	// Addr is the server's host:port.
	Addr string
	// Unavailable is how many calls fail with Unavailable first.
	Unavailable atomic.Int32

	opts     ServerOptions
	mu       sync.Mutex
	requests []SignCall
}

// ServerOptions configure a Server.
type ServerOptions struct {
	CA *CA
	// ServingID is the server certificate's SPIFFE ID; default the control
	// plane's, spiffe://<trust-domain>/ns/meshgate-system/svc/controlplane.
	ServingID string
	// Token is the one join token accepted, bound to BoundID.
	Token   string
	BoundID string
	// TTL of issued certificates; 1 h when zero.
	TTL time.Duration
	// Refuse, when not OK, fails every call with that code and RefuseMsg.
	Refuse    codes.Code
	RefuseMsg string
	// Register adds more services to the gRPC server (an xDS server, say).
	Register func(*grpc.Server)
}

// StartServer serves the CA on a loopback port until the test ends.
func StartServer(t testing.TB, o ServerOptions) *Server {
	t.Helper()
	if o.ServingID == "" {
		o.ServingID = spiffeid.ControlPlane(o.CA.TrustDomain).String()
	}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	s := &Server{opts: o}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{o.CA.Serving(t, o.ServingID)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    Pool(o.CA),
		MinVersion:   tls.VersionTLS12,
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)))
	cav1.RegisterCertificateAuthorityServer(srv, s)
	if o.Register != nil {
		o.Register(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return s
}

// Sign implements cav1.CertificateAuthorityServer.
func (s *Server) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	if s.opts.Refuse != codes.OK {
		return nil, status.Error(s.opts.Refuse, s.opts.RefuseMsg)
	}
	if s.Unavailable.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "not ready yet")
	}
	peerID := ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			if id, err := spiffeid.FromCertificate(info.State.VerifiedChains[0][0]); err == nil {
				peerID = id.String()
			}
		}
	}
	s.mu.Lock()
	s.requests = append(s.requests, SignCall{Request: req, PeerID: peerID})
	s.mu.Unlock()

	allowed := peerID
	if req.GetToken() != "" {
		if req.GetToken() != s.opts.Token {
			return nil, status.Error(codes.Unauthenticated, "unknown join token")
		}
		allowed = s.opts.BoundID
	}
	if allowed == "" {
		return nil, status.Error(codes.Unauthenticated, "no join token and no client certificate")
	}
	block, _ := pem.Decode(req.GetCsrPem())
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, status.Error(codes.InvalidArgument, "csr_pem is not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	if pub, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, status.Error(codes.InvalidArgument, "csr key is not ECDSA P-256")
	}
	csrID, err := spiffeid.FromCSR(csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	id := csrID.String()
	if td := csrID.TrustDomain; td != s.opts.CA.TrustDomain {
		return nil, status.Errorf(codes.InvalidArgument, "trust domain %q is not the mesh's trust domain %q", td, s.opts.CA.TrustDomain)
	}
	if id != allowed {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not get a certificate for %s", allowed, id)
	}
	leaf, err := s.opts.CA.Issue(id, csr.PublicKey, s.opts.TTL)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issue: %v", err)
	}
	return &cav1.SignResponse{
		CertChainPem:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		TrustBundlePem: s.opts.CA.RootPEM,
		SpiffeId:       id,
	}, nil
}

// Requests returns a copy of the Sign calls so far.
func (s *Server) Requests() []SignCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SignCall(nil), s.requests...)
}

// Token returns a fresh join token pinned to ca's root.
func (ca *CA) Token(t testing.TB) string {
	t.Helper()
	tok, err := token.New(ca.Root.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}
