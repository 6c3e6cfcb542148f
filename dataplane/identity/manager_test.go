package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

const ordersID = "spiffe://meshgate.local/ns/default/svc/orders"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestManager returns a Manager for default/orders against addr.
func newTestManager(t *testing.T, addr, tok string, mutate func(*ManagerOptions)) *Manager {
	t.Helper()
	opts := ManagerOptions{
		Namespace:             "default",
		Service:               "orders",
		ControlPlaneAddresses: []string{addr},
		Token:                 tok,
		Logger:                quietLogger(),
		RetryInitial:          10 * time.Millisecond,
		RetryMax:              50 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func startCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStartWithTokenPin(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
	m := newTestManager(t, srv.Addr, tok, nil)
	if m.Certificate() != nil || !m.NotAfter().IsZero() {
		t.Fatal("certificate before Start")
	}
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	cert := m.Certificate()
	if cert == nil || cert.Leaf == nil {
		t.Fatal("no certificate after Start")
	}
	if got := cert.Leaf.URIs[0].String(); got != ordersID || m.SPIFFEID() != ordersID {
		t.Errorf("certificate for %s, SPIFFEID() %s; want %s", got, m.SPIFFEID(), ordersID)
	}
	if !m.NotAfter().Equal(cert.Leaf.NotAfter) {
		t.Errorf("NotAfter() = %v, want %v", m.NotAfter(), cert.Leaf.NotAfter)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: identitytest.Pool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not chain to the CA: %v", err)
	}

	// The key only ever left as a public key inside the CSR.
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].Request.GetToken() != tok || reqs[0].PeerID != "" {
		t.Fatalf("server saw %d requests, want one with the token and no client certificate", len(reqs))
	}
	key := cert.PrivateKey.(*ecdsa.PrivateKey)
	keyBytes, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wire, err := proto.Marshal(reqs[0].Request)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wire, keyBytes) || bytes.Contains(wire, []byte("PRIVATE KEY")) {
		t.Error("the Sign request carries the private key")
	}
	block, rest := pem.Decode(reqs[0].Request.GetCsrPem())
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("csr_pem is not exactly one CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(csr.PublicKey) || len(csr.URIs) != 1 || csr.URIs[0].String() != ordersID {
		t.Errorf("CSR: public key matches %v, URIs %v", key.PublicKey.Equal(csr.PublicKey), csr.URIs)
	}
}

func TestStartRetriesWhileUnavailable(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
	srv.Unavailable.Store(3)
	m := newTestManager(t, srv.Addr, tok, nil)
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if m.Certificate() == nil {
		t.Fatal("no certificate")
	}
	if srv.Unavailable.Load() >= 0 {
		t.Errorf("server still had %d Unavailable answers to give", srv.Unavailable.Load()+1)
	}
}

func TestStartGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	m := newTestManager(t, addr, ca.Token(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = m.Start(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want the context's deadline", err)
	}
}

func TestStartRefused(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	otherCA := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	otherDomainCA := identitytest.NewCA(t, "example.org")
	tok := ca.Token(t)
	tests := []struct {
		name      string
		server    identitytest.ServerOptions
		token     string
		mutate    func(*ManagerOptions)
		wantErr   []string
		untrusted bool // ErrUntrustedControlPlane, and the server never got the request
	}{
		{
			name:      "token pinned to another root",
			server:    identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID},
			token:     otherCA.Token(t),
			wantErr:   []string{"control plane not trusted", "pin"},
			untrusted: true,
		},
		{
			name:      "server with another service's identity",
			server:    identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID, ServingID: "spiffe://meshgate.local/ns/default/svc/imposter"},
			token:     tok,
			wantErr:   []string{"presented identity spiffe://meshgate.local/ns/default/svc/imposter", "want spiffe://meshgate.local/ns/meshgate-system/svc/controlplane"},
			untrusted: true,
		},
		{
			name:      "server in another trust domain",
			server:    identitytest.ServerOptions{CA: otherDomainCA, Token: otherDomainCA.Token(t), BoundID: ordersID},
			token:     otherDomainCA.Token(t),
			wantErr:   []string{`trust domain "example.org"`, "--trust-domain example.org"},
			untrusted: true,
		},
		{
			name:      "CA file of another root",
			server:    identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID},
			token:     tok,
			mutate:    func(o *ManagerOptions) { o.CAFile = writeFile(t, "ca.pem", otherCA.RootPEM) },
			wantErr:   []string{"does not chain to the trust bundle"},
			untrusted: true,
		},
		{
			name:    "unknown token",
			server:  identitytest.ServerOptions{CA: ca, Token: ca.Token(t), BoundID: ordersID},
			token:   tok,
			wantErr: []string{"refused the join token: unknown join token", "meshgate token create --service orders"},
		},
		{
			name:    "token for another service",
			server:  identitytest.ServerOptions{CA: ca, Token: tok, BoundID: "spiffe://meshgate.local/ns/default/svc/payments"},
			token:   tok,
			wantErr: []string{"refused a certificate for " + ordersID, "may not get a certificate"},
		},
		{
			name:    "trust domain refused by the CA",
			server:  identitytest.ServerOptions{CA: ca, Token: tok, Refuse: codes.InvalidArgument, RefuseMsg: `trust domain "meshgate.local" is not the mesh's trust domain "corp"`},
			token:   tok,
			wantErr: []string{"refused the CSR", `not the mesh's trust domain "corp"`, "--trust-domain"},
		},
		{
			name:    "no CA service",
			server:  identitytest.ServerOptions{CA: ca, Refuse: codes.Unimplemented, RefuseMsg: "unknown service"},
			token:   tok,
			wantErr: []string{"does not serve the certificate authority"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := identitytest.StartServer(t, tt.server)
			m := newTestManager(t, srv.Addr, tt.token, tt.mutate)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := m.Start(ctx)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if ctx.Err() != nil {
				t.Fatalf("Start retried until the deadline instead of failing fast: %v", err)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if tt.untrusted {
				if !errors.Is(err, ErrUntrustedControlPlane) {
					t.Errorf("error %v is not ErrUntrustedControlPlane", err)
				}
				if n := len(srv.Requests()); n != 0 {
					t.Errorf("the untrusted server received %d Sign requests, want 0", n)
				}
			}
			if m.Certificate() != nil {
				t.Error("a certificate after a refused Start")
			}
		})
	}
}

func TestStartWithCAFile(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
	m := newTestManager(t, srv.Addr, tok, func(o *ManagerOptions) {
		o.CAFile = writeFile(t, "ca.pem", ca.RootPEM)
	})
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// TestRenewal: a renewal sends a CSR for a fresh key over a connection
// authenticated by the current certificate, without the join token, and
// installs the new certificate. (When renewals happen: TestRenewalTiming.)
func TestRenewal(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
	m := newTestManager(t, srv.Addr, tok, nil)
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	first := m.Certificate()
	if err := m.renew(startCtx(t), srv.Addr, false); err != nil {
		t.Fatalf("renew: %v", err)
	}
	renewed := m.Certificate()
	if renewed == first {
		t.Fatal("the renewed certificate was not installed")
	}
	if renewed.Leaf.URIs[0].String() != ordersID {
		t.Errorf("renewed certificate for %s", renewed.Leaf.URIs[0])
	}
	if renewed.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
		t.Error("renewal reused the key")
	}
	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("server saw %d requests", len(reqs))
	}
	if r := reqs[1]; r.Request.GetToken() != "" || r.PeerID != ordersID {
		t.Errorf("renewal: token %q, client certificate %q; want no token and the current certificate", r.Request.GetToken(), r.PeerID)
	}
}

func TestRunWithoutStart(t *testing.T) {
	t.Parallel()
	m := newTestManager(t, "127.0.0.1:1", identitytest.NewCA(t, spiffeid.DefaultTrustDomain).Token(t), nil)
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("Run before Start succeeded")
	}
}

// tlsPeerServer is a TLS server that requires a client certificate from
// clientCA and reports the SPIFFE ID of each client (or the handshake error).
func tlsPeerServer(t *testing.T, serving tls.Certificate, clientCA *identitytest.CA) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan string, 16)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    identitytest.Pool(clientCA),
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS12,
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(conn, cfg)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				peers <- "error: " + err.Error()
			} else {
				peers <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
			}
			tc.Close()
		}
	}()
	return ln.Addr().String(), peers
}

// xdsHandshake runs a handshake with m's xDS credentials against addr.
func xdsHandshake(t *testing.T, m *Manager, addr string) error {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := m.XDSCredentials().ClientHandshake(ctx, addr, raw)
	if err == nil {
		conn.Close()
	}
	return err
}

func TestXDSCredentialsPresentCertificate(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
	m := newTestManager(t, srv.Addr, tok, nil)
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatal(err)
	}
	addr, peers := tlsPeerServer(t, ca.Serving(t, spiffeid.ControlPlane(spiffeid.DefaultTrustDomain).String()), ca)
	if err := xdsHandshake(t, m, addr); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got := <-peers; got != ordersID {
		t.Fatalf("server saw client %q, want %s", got, ordersID)
	}

	// A server that is not the control plane is refused.
	impostor, _ := tlsPeerServer(t, ca.Serving(t, "spiffe://meshgate.local/ns/default/svc/payments"), ca)
	if err := xdsHandshake(t, m, impostor); err == nil || !strings.Contains(err.Error(), "presented identity") {
		t.Fatalf("handshake with a non-control-plane server = %v, want refused", err)
	}
}

func TestUpdateTrustBundle(t *testing.T) {
	t.Parallel()
	oldCA := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	newCA := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := oldCA.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: oldCA, Token: tok, BoundID: ordersID})
	m := newTestManager(t, srv.Addr, tok, nil)
	if err := m.Start(startCtx(t)); err != nil {
		t.Fatal(err)
	}
	// A control plane serving with a certificate of the new root, which
	// accepts the proxy's certificate of the old root.
	cpID := spiffeid.ControlPlane(spiffeid.DefaultTrustDomain).String()
	rotated, peers := tlsPeerServer(t, newCA.Serving(t, cpID), oldCA)

	steps := []struct {
		name   string
		bundle []byte // nil: no update
		wantOK bool
	}{
		{"bundle from Sign: old root only", nil, false},
		{"both roots", append(append([]byte(nil), oldCA.RootPEM...), newCA.RootPEM...), true},
		{"garbage is ignored", []byte("not a bundle"), true},
		{"old root only", oldCA.RootPEM, false},
		{"new root only", newCA.RootPEM, true},
	}
	for _, step := range steps {
		if step.bundle != nil {
			m.UpdateTrustBundle(step.bundle)
		}
		err := xdsHandshake(t, m, rotated)
		if step.wantOK {
			if err != nil {
				t.Fatalf("%s: handshake: %v", step.name, err)
			}
			if got := <-peers; got != ordersID {
				t.Fatalf("%s: server saw %q", step.name, got)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "does not chain to the trust bundle") {
			t.Fatalf("%s: handshake = %v, want refused", step.name, err)
		}
		<-peers // the server's side of the failed handshake
	}
}

func TestNewManagerRejectsBadOptions(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	good := func() ManagerOptions {
		return ManagerOptions{Namespace: "default", Service: "orders", ControlPlaneAddresses: []string{"127.0.0.1:15010"}, Token: tok}
	}
	tests := []struct {
		name   string
		mutate func(*ManagerOptions)
		want   string
	}{
		{"no token", func(o *ManagerOptions) { o.Token = "" }, "meshgate token create"},
		{"bad token", func(o *ManagerOptions) { o.Token = "mgt1.nope" }, "malformed join token"},
		{"no addresses", func(o *ManagerOptions) { o.ControlPlaneAddresses = nil }, "control-plane address"},
		{"no service", func(o *ManagerOptions) { o.Service = "" }, "service is required"},
		{"bad namespace", func(o *ManagerOptions) { o.Namespace = "Shop" }, `namespace "Shop"`},
		{"bad trust domain", func(o *ManagerOptions) { o.TrustDomain = "Mesh/Local" }, `trust domain "Mesh/Local"`},
		{"missing CA file", func(o *ManagerOptions) { o.CAFile = "/nonexistent/ca.pem" }, "CA file"},
		{"CA file without certificates", func(o *ManagerOptions) { o.CAFile = writeFile(t, "ca.pem", []byte("hello")) }, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := good()
			tt.mutate(&opts)
			_, err := NewManager(opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewManager() = %v, want error containing %q", err, tt.want)
			}
		})
	}
	if m, err := NewManager(good()); err != nil || m.SPIFFEID() != ordersID {
		t.Fatalf("NewManager(good) = %v, %v", m, err)
	}
}

func TestRenewDelay(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: start, NotAfter: start.Add(24 * time.Hour)}
	// A one-minute certificate back-dated by a minute, as the CA issues it.
	backdated := &x509.Certificate{NotBefore: start.Add(-time.Minute), NotAfter: start.Add(time.Minute)}
	tests := []struct {
		name     string
		leaf     *x509.Certificate
		received time.Time
		now      time.Time
		factor   float64
		want     time.Duration
	}{
		{"half lifetime", leaf, start, start, 1, 12 * time.Hour},
		{"earliest jitter", leaf, start, start, 0.9, 12 * time.Hour * 9 / 10},
		{"latest jitter", leaf, start, start, 1.1, 12 * time.Hour * 11 / 10},
		{"later now", leaf, start, start.Add(2 * time.Hour), 1, 10 * time.Hour},
		{"past due", leaf, start, start.Add(20 * time.Hour), 1, 0},
		{"received late: half of what was left", leaf, start.Add(4 * time.Hour), start.Add(4 * time.Hour), 1, 10 * time.Hour},
		{"back-dated NotBefore does not count", backdated, start, start, 1, 30 * time.Second},
		{"back-dated, earliest jitter", backdated, start, start, 0.9, 27 * time.Second},
		{"NotBefore after receipt (CA clock ahead)", leaf, start.Add(-time.Hour), start.Add(-time.Hour), 1, 13 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := renewDelay(tt.leaf, tt.received, tt.now, tt.factor); got != tt.want {
				t.Fatalf("renewDelay = %v, want %v", got, tt.want)
			}
		})
	}
}

// writeFile writes data into a file of a fresh temp dir and returns its path.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServe(t *testing.T) {
	t.Parallel()
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	tok := ca.Token(t)
	srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})

	t.Run("runs with a certificate", func(t *testing.T) {
		t.Parallel()
		m := newTestManager(t, srv.Addr, tok, nil)
		sentinel := errors.New("proxy stopped")
		err := m.Serve(startCtx(t), func(ctx context.Context) error {
			if m.Certificate() == nil {
				t.Error("run started without a certificate")
			}
			return sentinel
		})
		if !errors.Is(err, sentinel) {
			t.Fatalf("Serve = %v, want run's error", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		m := newTestManager(t, srv.Addr, ca.Token(t), nil) // a token the server does not know
		err := m.Serve(startCtx(t), func(context.Context) error {
			t.Error("run called after a refusal")
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "unknown join token") {
			t.Fatalf("Serve = %v, want the refusal", err)
		}
	})
	t.Run("stopped during start", func(t *testing.T) {
		t.Parallel()
		srv := identitytest.StartServer(t, identitytest.ServerOptions{CA: ca, Token: tok, BoundID: ordersID})
		srv.Unavailable.Store(1 << 30)
		m := newTestManager(t, srv.Addr, tok, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := m.Serve(ctx, func(context.Context) error { t.Error("run called"); return nil }); err != nil {
			t.Fatalf("Serve = %v, want nil after a stop during start", err)
		}
	})
}
