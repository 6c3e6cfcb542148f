package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/internal/backoff"
)

const (
	defaultRetryInitial = 250 * time.Millisecond
	defaultRetryMax     = 10 * time.Second
	// signTimeout bounds one Sign call, connection included.
	signTimeout = 15 * time.Second
	// renewJitter is the ± fraction around half the lifetime at which a
	// certificate is renewed.
	renewJitter = 0.10
	// minRenewInterval is the least time between the starts of two renewal
	// attempts, successful or failed: whatever the certificate says, the
	// renewal loop cannot spin.
	minRenewInterval = 2 * time.Second
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// TrustDomain of the mesh; spiffeid.DefaultTrustDomain when empty. It must be the
	// control plane's (MeshConfig.spec.trustDomain).
	TrustDomain string
	// Namespace and Service make the SPIFFE ID; required. A gateway node's
	// service is the name of its Gateway.
	Namespace string
	Service   string
	// ControlPlaneAddresses of the CA service (the xDS port), host:port;
	// at least one. Attempts rotate through them.
	ControlPlaneAddresses []string
	// Token is the join token (`meshgate token create`); required: it
	// authenticates the first CSR and, unless CAFile is set, its pin verifies
	// the control plane on the first connection.
	Token string
	// CAFile is a PEM bundle of roots to verify the control plane with on the
	// first connection, instead of the token's pin. Optional.
	CAFile string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// RetryInitial and RetryMax bound the exponential backoff between
	// attempts; 250 ms and 10 s when zero.
	RetryInitial, RetryMax time.Duration
	// OnCertificate, when set, is called with every certificate the
	// Manager installs (the first, then each renewal) and the trust bundle
	// the CA sent with it (nil when none), before Start or the renewal
	// returns: a hook for a caller that hands the certificate on (meshgate
	// bootstrap grpc writes it to files).
	OnCertificate func(cert *tls.Certificate, trustBundlePEM []byte)
}

// Manager is the proxy's identity: it obtains its certificate from the
// control plane's CA with a CSR (the ECDSA P-256 key is generated in memory
// and never leaves it), renews it at half its remaining lifetime as received,
// and keeps the trust bundle used to verify the control plane. It implements
// Provider. Start it once, then Run it in the background.
type Manager struct {
	opts           ManagerOptions
	logger         *slog.Logger
	id             spiffeid.ID
	idText         string // id.String()
	controlPlaneID spiffeid.ID
	joinToken      token.Token

	cert atomic.Pointer[tls.Certificate]
	// receivedAt is when the current certificate was installed (Unix
	// nanoseconds): its lifetime for renewal counts from there, not from its
	// NotBefore, which the CA back-dates for clock skew.
	receivedAt atomic.Int64
	roots      atomic.Pointer[x509.CertPool] // nil: verify with the token's pin
	// bundlePEM is the PEM of roots as last received (nil: none yet).
	bundlePEM atomic.Pointer[[]byte]

	// sign sends one CSR to the CA at addr: signGRPC, or a test's fake.
	// Its errors are classified (permanentError for a refusal).
	sign func(ctx context.Context, addr string, req *cav1.SignRequest) (*cav1.SignResponse, error)
}

var _ Provider = (*Manager)(nil)

// NewManager checks opts, reads the CA file if any, and returns a Manager
// without a certificate; nothing touches the network before Start.
func NewManager(opts ManagerOptions) (*Manager, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = spiffeid.DefaultTrustDomain
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = defaultRetryInitial
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = defaultRetryMax
	}
	opts.RetryMax = max(opts.RetryMax, opts.RetryInitial)
	id, err := spiffeid.New(opts.TrustDomain, opts.Namespace, opts.Service)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if len(opts.ControlPlaneAddresses) == 0 {
		return nil, errors.New("identity: at least one control-plane address is required")
	}
	if opts.Token == "" {
		return nil, errors.New("identity: a join token is required for the first certificate " +
			"(create one on the control plane with `meshgate token create --service <name>`)")
	}
	joinToken, err := token.Parse(opts.Token)
	if err != nil {
		return nil, fmt.Errorf("identity: join token: %w", err)
	}
	m := &Manager{
		opts:           opts,
		logger:         opts.Logger.With("component", "identity", "spiffe_id", id.String()),
		id:             id,
		idText:         id.String(),
		controlPlaneID: spiffeid.ControlPlane(opts.TrustDomain),
		joinToken:      joinToken,
	}
	m.sign = m.signGRPC
	if opts.CAFile != "" {
		pemBundle, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("identity: CA file: %w", err)
		}
		roots, err := parseBundle(pemBundle)
		if err != nil {
			return nil, fmt.Errorf("identity: CA file %s: %w", opts.CAFile, err)
		}
		m.roots.Store(roots)
	}
	return m, nil
}

// SPIFFEID is the proxy's identity.
func (m *Manager) SPIFFEID() string { return m.idText }

// Certificate returns the current certificate and key; nil before Start
// succeeded. Lock-free.
func (m *Manager) Certificate() *tls.Certificate { return m.cert.Load() }

// NotAfter is when the current certificate expires; zero before Start.
func (m *Manager) NotAfter() time.Time {
	if c := m.cert.Load(); c != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// UpdateTrustBundle replaces the roots that verify the control plane with
// pemBundle (the ROOTCA secret). A bundle without any certificate is ignored
// with a warning: the previous roots stay.
func (m *Manager) UpdateTrustBundle(pemBundle []byte) {
	roots, err := parseBundle(pemBundle)
	if err != nil {
		m.logger.Warn("trust bundle update ignored", "error", err)
		return
	}
	m.roots.Store(roots)
	bundle := slices.Clone(pemBundle)
	m.bundlePEM.Store(&bundle)
	m.logger.Debug("trust bundle updated")
}

// TrustBundlePEM is the trust bundle as last received from the control
// plane (PEM); nil before the first certificate.
func (m *Manager) TrustBundlePEM() []byte {
	if b := m.bundlePEM.Load(); b != nil {
		return *b
	}
	return nil
}

// XDSCredentials are the transport credentials of the xDS connection: TLS
// presenting the current certificate, verifying the control plane against the
// current trust bundle and its SPIFFE ID on every handshake, so certificate
// renewals and bundle updates apply to the next connection without rebuilding
// anything.
func (m *Manager) XDSCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(m.clientTLSConfig())
}

// clientTLSConfig is the TLS configuration of every connection to the
// control plane.
func (m *Manager) clientTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and the SPIFFE ID are checked by VerifyConnection
		// against the current bundle; the host name means nothing here.
		InsecureSkipVerify:   true,
		VerifyConnection:     m.verifyConnection,
		GetClientCertificate: m.clientCertificate,
	}
}

// verifyConnection checks the control plane of one handshake.
func (m *Manager) verifyConnection(cs tls.ConnectionState) error {
	return verifyControlPlane(cs.PeerCertificates, m.roots.Load(), m.joinToken.Pin, m.controlPlaneID)
}

// clientCertificate presents the current certificate while it is valid, and
// none otherwise (then the join token authenticates).
func (m *Manager) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil && time.Now().Before(c.Leaf.NotAfter) {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// Start obtains the first certificate with the join token. It retries with
// backoff while the control plane is unavailable, and fails at once when the
// control plane is not trusted or refuses the request (Unauthenticated,
// PermissionDenied, InvalidArgument), with the reason. It returns ctx's error
// when ctx ends first.
func (m *Manager) Start(ctx context.Context) error {
	retry := backoff.New(m.opts.RetryInitial, m.opts.RetryMax)
	for attempt := 0; ; attempt++ {
		addr := m.opts.ControlPlaneAddresses[attempt%len(m.opts.ControlPlaneAddresses)]
		err := m.renew(ctx, addr, true)
		if err == nil {
			m.logger.Info("certificate issued", "not_after", m.NotAfter())
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("identity: first certificate: %w (last error: %w)", ctx.Err(), err)
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("identity: first certificate from %s: %w", addr, err)
		}
		wait := retry.Next()
		m.logger.Warn("certificate authority unavailable; retrying", "address", addr, "error", err, "retry_in", wait)
		if !backoff.Sleep(ctx, wait) {
			return fmt.Errorf("identity: first certificate: %w (last error: %w)", ctx.Err(), err)
		}
	}
}

// Run renews the certificate until ctx is done, authenticated by the
// current certificate: at half of the lifetime it had left when it was
// received (±10 %), never sooner than minRenewInterval after the previous
// attempt. A failed renewal is retried with backoff (again no sooner than
// minRenewInterval); the current certificate stays in use until a new one
// arrives. Once it has expired, renewals present the join token instead.
// When the control plane refuses to renew the certificate (PermissionDenied:
// the proxy's token, identity or enrolment was revoked), Run stops renewing
// and does not fall back to the join token: the proxy keeps its certificate
// until it expires. Run needs a successful Start and returns nil when ctx is
// done.
func (m *Manager) Run(ctx context.Context) error {
	if m.cert.Load() == nil {
		return errors.New("identity: Run before a successful Start")
	}
	attempt := 0
	lastAttempt := time.Unix(0, m.receivedAt.Load())
	retry := backoff.New(m.opts.RetryInitial, m.opts.RetryMax) // failed renewals in a row
	var retryIn time.Duration                                  // after a failure: the wait before the next attempt
	for {
		current := m.cert.Load()
		now := time.Now()
		wait := retryIn
		if retry.Failures() == 0 {
			factor := 1 + renewJitter*(2*mathrand.Float64()-1)
			wait = renewDelay(current.Leaf, time.Unix(0, m.receivedAt.Load()), now, factor)
		}
		wait = max(wait, lastAttempt.Add(minRenewInterval).Sub(now))
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
		addr := m.opts.ControlPlaneAddresses[attempt%len(m.opts.ControlPlaneAddresses)]
		attempt++
		lastAttempt = time.Now()
		expired := !lastAttempt.Before(current.Leaf.NotAfter)
		err := m.renew(ctx, addr, expired)
		if err == nil {
			m.logger.Info("certificate renewed", "not_after", m.NotAfter())
			retry.Reset()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		var perm *permanentError
		if !expired && errors.As(err, &perm) && perm.code == codes.PermissionDenied {
			m.logger.Error("the control plane refused to renew this proxy's certificate: renewal stopped; "+
				"the proxy loses its identity when the certificate expires (restart it with a new join token "+
				"once it may rejoin)", "address", addr, "error", err, "not_after", current.Leaf.NotAfter)
			<-ctx.Done()
			return nil
		}
		retryIn = retry.Next()
		if expired {
			m.logger.Error("certificate expired and renewal failed; retrying", "address", addr, "error", err, "retry_in", retryIn)
		} else {
			m.logger.Warn("certificate renewal failed; retrying", "address", addr, "error", err,
				"retry_in", retryIn, "not_after", current.Leaf.NotAfter)
		}
	}
}

// renewDelay is how long to wait before renewing leaf, received at
// receivedAt: until half (times factor) of the lifetime it had left when it
// arrived has passed, and not negative. The lifetime counts from receipt,
// or from NotBefore when that is later (a CA clock ahead of ours): never
// from a NotBefore the CA back-dated for clock skew, which would make a
// short-lived certificate due for renewal as soon as it arrives.
func renewDelay(leaf *x509.Certificate, receivedAt, now time.Time, factor float64) time.Duration {
	start := receivedAt
	if leaf.NotBefore.After(start) {
		start = leaf.NotBefore
	}
	lifetime := leaf.NotAfter.Sub(start)
	renewAt := start.Add(time.Duration(float64(lifetime) / 2 * factor))
	return max(renewAt.Sub(now), 0)
}

// renew sends one CSR with a fresh key to addr and installs the result.
// withToken: authenticate with the join token rather than the current
// certificate.
func (m *Manager) renew(ctx context.Context, addr string, withToken bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.id.URL()}}, key)
	if err != nil {
		return fmt.Errorf("create CSR: %w", err)
	}
	req := &cav1.SignRequest{CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})}
	if withToken {
		req.Token = m.opts.Token
	}
	resp, err := m.sign(ctx, addr, req)
	if err != nil {
		return err
	}
	cert, err := m.parseSignResponse(resp, key)
	if err != nil {
		return permanent(fmt.Errorf("certificate authority at %s answered with an unusable certificate: %w", addr, err))
	}
	if len(resp.GetTrustBundlePem()) > 0 {
		m.UpdateTrustBundle(resp.GetTrustBundlePem())
	}
	m.receivedAt.Store(time.Now().UnixNano())
	m.cert.Store(cert)
	if m.opts.OnCertificate != nil {
		m.opts.OnCertificate(cert, resp.GetTrustBundlePem())
	}
	return nil
}

// signGRPC sends req to the CA service at addr over TLS, verifying the
// control plane, and classifies a failure.
func (m *Manager) signGRPC(ctx context.Context, addr string, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	// The handshake's own verification error, to tell "not trusted" apart
	// from "unreachable": gRPC reports both as Unavailable.
	var verifyErr atomic.Pointer[error]
	tlsConfig := m.clientTLSConfig()
	tlsConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		err := m.verifyConnection(cs)
		if err != nil {
			verifyErr.Store(&err)
		}
		return err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		return nil, permanent(fmt.Errorf("dial %s: %w", addr, err))
	}
	defer conn.Close()
	signCtx, cancel := context.WithTimeout(ctx, signTimeout)
	defer cancel()
	resp, err := cav1.NewCertificateAuthorityClient(conn).Sign(signCtx, req)
	if err != nil {
		if verr := verifyErr.Load(); verr != nil {
			return nil, permanent(*verr)
		}
		return nil, m.classify(err)
	}
	return resp, nil
}

// classify turns a Sign error into a retryable or a permanent error with the
// server's message.
func (m *Manager) classify(err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unauthenticated:
		return refused(st.Code(), fmt.Errorf("the control plane refused the join token: %s "+
			"(create a new one with `meshgate token create --service %s`)", st.Message(), m.opts.Service))
	case codes.PermissionDenied:
		return refused(st.Code(), fmt.Errorf("the control plane refused a certificate for %s: %s", m.SPIFFEID(), st.Message()))
	case codes.InvalidArgument:
		msg := fmt.Sprintf("the control plane refused the CSR for %s: %s", m.SPIFFEID(), st.Message())
		if strings.Contains(strings.ToLower(st.Message()), "trust domain") {
			msg += fmt.Sprintf(" (this proxy uses trust domain %q: set --trust-domain to the mesh's)", m.opts.TrustDomain)
		}
		return refused(st.Code(), errors.New(msg))
	case codes.Unimplemented:
		return permanent(fmt.Errorf("the control plane does not serve the certificate authority: %s", st.Message()))
	}
	return fmt.Errorf("sign: %w", err)
}

// parseSignResponse checks that the certificate is for key and this identity
// and chains to the returned bundle, and pairs it with key.
func (m *Manager) parseSignResponse(resp *cav1.SignResponse, key *ecdsa.PrivateKey) (*tls.Certificate, error) {
	var ders [][]byte
	rest := resp.GetCertChainPem()
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			ders = append(ders, block.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, errors.New("no certificate in cert_chain_pem")
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("cert_chain_pem[%d]: %w", i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the certificate is not for the key of the CSR")
	}
	id, err := spiffeid.FromCertificate(leaf)
	if err != nil {
		return nil, err
	}
	if id != m.id {
		return nil, fmt.Errorf("the certificate is for %s, want %s", id, m.SPIFFEID())
	}
	if !time.Now().Before(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate expired at %s", leaf.NotAfter.Format(time.RFC3339))
	}
	if len(resp.GetTrustBundlePem()) > 0 {
		roots, err := parseBundle(resp.GetTrustBundlePem())
		if err != nil {
			return nil, fmt.Errorf("trust_bundle_pem: %w", err)
		}
		intermediates := x509.NewCertPool()
		for _, c := range certs[1:] {
			intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return nil, fmt.Errorf("the certificate does not chain to the trust bundle: %w", err)
		}
	}
	return &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}, nil
}

// parseBundle parses a PEM bundle of root certificates.
func parseBundle(pemBundle []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	rest := pemBundle
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust bundle certificate %d: %w", n, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in the trust bundle")
	}
	return pool, nil
}

// permanentError is a failure that retrying does not fix.
type permanentError struct {
	err error
	// code is the gRPC code of the CA's refusal; codes.Unknown otherwise.
	code codes.Code
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err, code: codes.Unknown} }

// refused is the CA's refusal with code.
func refused(code codes.Code, err error) error { return &permanentError{err: err, code: code} }

// Serve obtains the first certificate (Start), then runs run and the renewal
// loop (Run) side by side until run returns, and returns run's error. It is
// how a proxy starts: no xDS connection before the proxy has its identity.
// When ctx ends before the first certificate arrives, Serve returns nil
// without running run: a stop requested during start is not an error.
func (m *Manager) Serve(ctx context.Context, run func(context.Context) error) error {
	if err := m.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	renewCtx, stopRenewal := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		_ = m.Run(renewCtx) // returns only when renewCtx is done
	}()
	err := run(ctx)
	stopRenewal()
	<-renewed
	return err
}

// ProxyOptions are how a gateway node or a sidecar obtains its identity,
// shared by both roles (the flags --token, --ca-file, --trust-domain and
// --insecure).
type ProxyOptions struct {
	// Token is the join token of the identity
	// (`meshgate token create --service <name> --namespace <namespace>`);
	// required unless Insecure.
	Token string
	// CAFile is a PEM bundle that verifies the control plane on the first
	// connection instead of the token's pin; optional.
	CAFile string
	// TrustDomain of the mesh; spiffeid.DefaultTrustDomain when empty.
	TrustDomain string
	// Insecure runs without an identity over plaintext xDS, for control
	// planes without TLS (tests of the pre-mTLS behaviour only).
	Insecure bool
}

// ForProxy returns the identity manager of a gateway or sidecar, or nil when
// insecure: the one place that decides whether a proxy runs with an identity
// and says what to do when it has no join token. opts.Token, CAFile,
// TrustDomain, Namespace, Service and ControlPlaneAddresses are as for
// NewManager.
func ForProxy(opts ManagerOptions, insecure bool) (*Manager, error) {
	if insecure {
		if opts.Token != "" || opts.CAFile != "" {
			return nil, errors.New("--insecure runs without an identity: do not give a join token or --ca-file with it")
		}
		if opts.Logger != nil {
			opts.Logger.Warn("running without an identity: plaintext xDS, no mTLS (--insecure)")
		}
		return nil, nil
	}
	if opts.Token == "" {
		return nil, fmt.Errorf("a join token is required: create one on the control plane with "+
			"`meshgate token create --service %s --namespace %s` and pass it with --token-file, --token or $MESHGATE_TOKEN "+
			"(or --insecure, for a control plane without TLS in tests)", opts.Service, opts.Namespace)
	}
	return NewManager(opts)
}
