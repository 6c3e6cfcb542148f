package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

type fixture struct {
	ca          *CA
	tokens      *tokens.Registry
	revocations *Revocations
	clock       *clock
	addr        string
}

func startService(t *testing.T) *fixture {
	t.Helper()
	clk := newClock()
	clk.set(time.Now()) // TLS handshakes check validity against the real clock
	st := state.NewMemory()
	c := newCA(t, st, clk)
	reg, err := tokens.New(tokens.Options{Store: st, PinRoot: c.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	settings := func() (string, time.Duration) { return "meshgate.local", time.Hour }
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serving := NewServingCert(c, settings, lis.Addr())
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(c.ServerTLSConfig(serving))))
	svc := NewService(c, reg, settings, nil)
	revocations := NewRevocations(st, reg, clk.now)
	svc.SetRevocations(revocations)
	svc.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return &fixture{ca: c, tokens: reg, revocations: revocations, clock: clk, addr: lis.Addr().String()}
}

// client dials the CA, presenting cert when non-nil.
func (f *fixture) client(t *testing.T, cert *tls.Certificate) cav1.CertificateAuthorityClient {
	t.Helper()
	cfg := &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cav1.NewCertificateAuthorityClient(conn)
}

func (f *fixture) token(t *testing.T, service string) (string, tokens.Record) {
	t.Helper()
	tok, rec, err := f.tokens.Create(context.Background(), service, "default", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok, rec
}

// tlsCert turns a Sign response and its key into a client certificate.
func tlsCert(t *testing.T, resp *cav1.SignResponse, key *ecdsa.PrivateKey) *tls.Certificate {
	t.Helper()
	block, _ := pem.Decode(resp.GetCertChainPem())
	if block == nil {
		t.Fatal("no certificate in the response")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

func TestSign(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := startService(t)
	anon := f.client(t, nil)
	key := mustKey(t)
	csr := newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/orders")
	good, _ := f.token(t, "orders")

	resp, err := anon.Sign(ctx, &cav1.SignRequest{CsrPem: csr, Token: good})
	if err != nil {
		t.Fatalf("Sign with a good token: %v", err)
	}
	cert := tlsCert(t, resp, key)
	if resp.GetSpiffeId() != ordersID.String() || cert.Leaf.URIs[0].String() != ordersID.String() {
		t.Errorf("issued for %s / %v", resp.GetSpiffeId(), cert.Leaf.URIs)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(resp.GetTrustBundlePem()) {
		t.Fatal("no trust bundle in the response")
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued certificate does not verify under the returned bundle: %v", err)
	}
	if !resp.GetNotAfter().AsTime().Equal(cert.Leaf.NotAfter) {
		t.Errorf("NotAfter %v vs %v", resp.GetNotAfter().AsTime(), cert.Leaf.NotAfter)
	}

	revoked, revokedRec := f.token(t, "orders")
	if _, err := f.tokens.Revoke(ctx, revokedRec.ID); err != nil {
		t.Fatal(err)
	}
	expiring, _ := f.token(t, "orders")
	usersTok, _ := f.token(t, "users")
	unknown := good[:len("mgt1.")] + "0000000000000000" + good[len("mgt1.")+16:]

	mtls := f.client(t, cert)
	tests := []struct {
		name   string
		client cav1.CertificateAuthorityClient
		csr    []byte
		token  string
		want   codes.Code
	}{
		{"renew with the client certificate, no token", mtls, newCSR(t, mustKey(t), ordersID.String()), "", codes.OK},
		{"renew another identity with a certificate", mtls, newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/users"), "", codes.PermissionDenied},
		{"token for another service", anon, newCSR(t, key, "spiffe://meshgate.local/ns/default/svc/users"), good, codes.PermissionDenied},
		{"token for users asks orders", anon, csr, usersTok, codes.PermissionDenied},
		{"control plane identity", anon, newCSR(t, key, "spiffe://meshgate.local/ns/meshgate-system/svc/controlplane"), good, codes.PermissionDenied},
		{"no token no certificate", anon, csr, "", codes.Unauthenticated},
		{"garbage token", anon, csr, "not-a-token", codes.Unauthenticated},
		{"unknown token", anon, csr, unknown, codes.Unauthenticated},
		{"revoked token", anon, csr, revoked, codes.Unauthenticated},
		{"garbage CSR", anon, []byte("garbage"), good, codes.InvalidArgument},
		{"foreign trust domain", anon, newCSR(t, key, "spiffe://other.example/ns/default/svc/orders"), good, codes.InvalidArgument},
		{"huge CSR", anon, make([]byte, MaxCSRSize+1), good, codes.InvalidArgument},
	}
	for _, tt := range tests {
		_, err := tt.client.Sign(ctx, &cav1.SignRequest{CsrPem: tt.csr, Token: tt.token})
		if got := status.Code(err); got != tt.want {
			t.Errorf("%s: code %s (%v), want %s", tt.name, got, err, tt.want)
		}
	}

	// The unknown-token and bad-secret refusals read the same.
	_, errUnknown := anon.Sign(ctx, &cav1.SignRequest{CsrPem: csr, Token: unknown})
	badSecret := good[:len("mgt1.")+17] + "A" + good[len("mgt1.")+18:]
	_, errSecret := anon.Sign(ctx, &cav1.SignRequest{CsrPem: csr, Token: badSecret})
	if status.Convert(errUnknown).Message() != status.Convert(errSecret).Message() {
		t.Errorf("unknown %q vs bad secret %q", errUnknown, errSecret)
	}

	// An expired token.
	f.clock.add(2 * time.Hour)
	if _, err := anon.Sign(ctx, &cav1.SignRequest{CsrPem: csr, Token: expiring}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("expired token: %v", err)
	}
}

func TestSignAfterRootDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := startService(t)
	key := mustKey(t)
	tok, _ := f.token(t, "orders")
	resp, err := f.client(t, nil).Sign(ctx, &cav1.SignRequest{CsrPem: newCSR(t, key, ordersID.String()), Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	cert := tlsCert(t, resp, key)
	for _, step := range []Step{StepBegin, StepSwitch, StepFinish} {
		if _, err := f.ca.Rotate(ctx, step, true, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// The old root is gone: its certificate no longer authenticates (the
	// client trusts the new bundle to reach the server).
	cfg := &tls.Config{RootCAs: f.ca.Pool(), Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = cav1.NewCertificateAuthorityClient(conn).Sign(ctx, &cav1.SignRequest{CsrPem: newCSR(t, key, ordersID.String())})
	if err == nil {
		t.Fatal("a certificate of a dropped root renewed")
	}
}
