package dataplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/upstream"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
	"github.com/meshgate/meshgate/internal/backoff"
)

const (
	// rootCASecretName is the trust bundle secret (docs/xds.md); its updates
	// also reach the identity provider.
	rootCASecretName = "ROOTCA"
	// handshakeTimeout bounds the first-byte peek and the TLS handshake of an
	// inbound connection.
	handshakeTimeout = 10 * time.Second
	// tlsRecordHandshake is the first byte of a TLS ClientHello record.
	tlsRecordHandshake = 0x16
	// acceptRetryInitial and acceptRetryMax bound the backoff after a
	// failed Accept (out of file descriptors, say), as net/http's.
	acceptRetryInitial = 5 * time.Millisecond
	acceptRetryMax     = time.Second
	// errNoIdentity is the reason a TLS resource is NACKed by a proxy
	// without an identity.
	errNoIdentity = "mesh TLS needs the proxy's identity (a join token), and this proxy has none"
)

// secretSpec is an accepted Secret: a trust bundle, or a listener
// certificate and its key.
type secretSpec struct {
	config *tlsv3.Secret
	bundle *meshtls.Bundle
	cert   *tls.Certificate
}

// applySecrets parses every Secret (a PEM trust bundle) and merges them into
// the accepted secrets; then publishes the bundles to the handshakes and the
// ROOTCA bundle to the identity provider.
func (p *Proxy) applySecrets(resources []proto.Message) error {
	next := maps.Clone(p.state.secrets)
	seen := make(map[string]bool, len(resources))
	for _, r := range resources {
		s, ok := r.(*tlsv3.Secret)
		if !ok {
			return fmt.Errorf("resource of type %T in a Secret update", r)
		}
		name := s.GetName()
		if seen[name] {
			return fmt.Errorf("secret %q: defined twice", name)
		}
		seen[name] = true
		if name == xdsclient.LocalSecretName {
			return fmt.Errorf("secret %q: the proxy's own certificate is local and never received", name)
		}
		if old := p.state.secrets[name]; old != nil && proto.Equal(old.config, s) {
			continue
		}
		if p.opts.Identity == nil && s.GetTlsCertificate() == nil {
			return fmt.Errorf("secret %q: %s", name, errNoIdentity)
		}
		spec, err := parseSecret(s)
		if err != nil {
			return err
		}
		next[name] = spec
	}
	old := p.state.secrets[rootCASecretName]
	p.state.secrets = next
	p.publishTrust()
	if root := next[rootCASecretName]; root != nil && root.bundle != nil && (old == nil || !bytes.Equal(old.bundle.PEM, root.bundle.PEM)) {
		p.opts.Identity.UpdateTrustBundle(root.bundle.PEM)
		p.logger.Info("trust bundle updated", "roots", len(root.bundle.Roots))
	}
	return nil
}

// parseSecret reads a Secret already checked by xdscheck: a PEM trust
// bundle, or a certificate and key (whose parse errors never quote the key).
func parseSecret(s *tlsv3.Secret) (*secretSpec, error) {
	if tc := s.GetTlsCertificate(); tc != nil {
		cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
		if err != nil {
			return nil, fmt.Errorf("secret %q: tls_certificate: certificate and private key do not make a key pair: %w", s.GetName(), err)
		}
		return &secretSpec{config: s, cert: &cert}, nil
	}
	bundle, err := meshtls.ParseBundle(s.GetValidationContext().GetTrustedCa().GetInlineBytes())
	if err != nil {
		return nil, fmt.Errorf("secret %q: validation_context.trusted_ca.inline_bytes: %w", s.GetName(), err)
	}
	return &secretSpec{config: s, bundle: bundle}, nil
}

// pruneSecrets drops the accepted secrets no accepted listener or cluster
// references any more.
func (p *Proxy) pruneSecrets() {
	var refs []proto.Message
	for _, spec := range p.state.listeners {
		refs = append(refs, spec.config)
	}
	for _, c := range p.state.clusters {
		refs = append(refs, c)
	}
	wanted := map[string]bool{}
	for _, name := range xdsclient.SecretNames(refs) {
		wanted[name] = true
	}
	n := len(p.state.secrets)
	maps.DeleteFunc(p.state.secrets, func(name string, _ *secretSpec) bool { return !wanted[name] })
	if len(p.state.secrets) != n {
		p.publishTrust()
	}
}

// publishTrust makes the accepted bundles visible to new handshakes.
func (p *Proxy) publishTrust() {
	bundles := make(map[string]*meshtls.Bundle, len(p.state.secrets))
	certs := make(map[string]*tls.Certificate)
	for name, s := range p.state.secrets {
		if s.cert != nil {
			certs[name] = s.cert
			continue
		}
		bundles[name] = s.bundle
	}
	p.trust.Store(&bundles)
	p.certs.Store(&certs)
}

// trustBundle is the current bundle of a validation secret, nil when not
// received. Lock-free: called on every handshake.
func (p *Proxy) trustBundle(name string) *meshtls.Bundle {
	if m := p.trust.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

// secretsReady reports whether every named secret is available.
func (p *Proxy) secretsReady(names []string) bool {
	for _, name := range names {
		if name == xdsclient.LocalSecretName {
			if p.opts.Identity == nil {
				return false
			}
			continue
		}
		if p.state.secrets[name] == nil {
			return false
		}
	}
	return true
}

// upstreamOptions give clusters the proxy's identity for mesh mTLS.
func (p *Proxy) upstreamOptions() []upstream.Option {
	if p.opts.Identity == nil {
		return nil
	}
	return []upstream.Option{upstream.WithTLS(upstream.TLS{
		Certificate: p.opts.Identity.Certificate,
		TrustBundle: p.trustBundle,
	})}
}

// tlsMode is how a listener treats connections.
type tlsMode uint8

const (
	modePlaintext  tlsMode = iota // HTTP only
	modeTLS                       // mTLS only (STRICT): plaintext fails the handshake
	modePermissive                // TLS or plaintext, told apart by the first byte
	modeTerminate                 // TLS with certificates received over SDS, by SNI (a gateway's HTTPS)
)

func (m tlsMode) String() string {
	switch m {
	case modeTLS:
		return "tls"
	case modePermissive:
		return "permissive"
	case modeTerminate:
		return "terminate"
	}
	return "plaintext"
}

// tlsParams are the TLS settings of a listener; comparable, part of
// serverParams.
type tlsParams struct {
	mode              tlsMode
	requireClientCert bool
	alpn              string // comma-separated, as offered
	bundle            string // validation secret name
	// terminate describes the chains of modeTerminate (listenerSpec.terminate),
	// so that a change of them makes a new server.
	terminate string
}

// parseListenerTLS reads the filter chains' matches and transport sockets
// (docs/xds.md "Inbound listener modes").
func parseListenerTLS(l *listenerv3.Listener, haveIdentity bool) (tlsParams, []terminateChain, error) {
	params, terminate, err := parseListenerTLSChains(l, haveIdentity)
	if err == nil && len(terminate) > 0 {
		params.mode = modeTerminate
		params.terminate = fmt.Sprint(terminate)
	}
	return params, terminate, err
}

// terminating reports whether a TLS context presents certificates
// received over SDS (a gateway's HTTPS listener).
func terminating(ctx *tlsv3.DownstreamTlsContext) bool {
	return slices.ContainsFunc(ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(), func(c *tlsv3.SdsSecretConfig) bool {
		return c.GetSdsConfig() != nil
	})
}

func parseListenerTLSChains(l *listenerv3.Listener, haveIdentity bool) (tlsParams, []terminateChain, error) {
	chains := l.GetFilterChains()
	inspector := len(l.GetListenerFilters()) > 0
	var params tlsParams
	var terminate []terminateChain
	var tlsChain, plainChain bool
	var ctx *tlsv3.DownstreamTlsContext
	seen := map[string]bool{}
	for i, chain := range chains {
		path := fmt.Sprintf("filter_chains[%d]", i)
		transport := chain.GetFilterChainMatch().GetTransportProtocol()
		switch {
		case transport == "" && len(chains) > 1:
			return params, nil, fmt.Errorf("%s.filter_chain_match.transport_protocol: required with two filter chains", path)
		case transport != "" && !inspector:
			return params, nil, fmt.Errorf("%s.filter_chain_match: needs the tls_inspector listener filter", path)
		case seen[matchKey(chain.GetFilterChainMatch())]:
			return params, nil, fmt.Errorf("%s.filter_chain_match: transport_protocol %q and these server_names and application_protocols matched by two chains", path, transport)
		}
		seen[matchKey(chain.GetFilterChainMatch())] = true
		appProtocols := chain.GetFilterChainMatch().GetApplicationProtocols()
		socket := chain.GetTransportSocket()
		switch {
		case transport == "tls" && socket == nil:
			return params, nil, fmt.Errorf("%s.transport_socket: required for transport_protocol \"tls\"", path)
		case transport == "raw_buffer" && socket != nil:
			return params, nil, fmt.Errorf("%s.transport_socket: not supported for transport_protocol \"raw_buffer\"", path)
		}
		if socket == nil {
			if len(terminate) > 0 {
				return params, nil, fmt.Errorf("%s.transport_socket: a listener with certificates received over SDS has no plaintext chain", path)
			}
			plainChain = true
			continue
		}
		tlsChain = true
		ctx = &tlsv3.DownstreamTlsContext{}
		if err := socket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return params, nil, fmt.Errorf("%s.transport_socket.typed_config: %w", path, err)
		}
		if terminating(ctx) {
			if transport != "tls" || plainChain {
				return params, nil, fmt.Errorf("%s.filter_chain_match.transport_protocol: \"tls\" required with certificates received over SDS", path)
			}
			if len(appProtocols) > 0 && len(chain.GetFilterChainMatch().GetServerNames()) == 0 {
				return params, nil, fmt.Errorf("%s.filter_chain_match.application_protocols: only with server_names", path)
			}
			c, err := parseTerminateChain(chain.GetFilterChainMatch().GetServerNames(), appProtocols, ctx)
			if err != nil {
				return params, nil, fmt.Errorf("%s.transport_socket.typed_config.%w", path, err)
			}
			terminate = append(terminate, c)
			if len(appProtocols) == 0 {
				params.alpn = strings.Join(common(ctx).GetAlpnProtocols(), ",")
			}
			continue
		}
		if len(terminate) > 0 {
			return params, nil, fmt.Errorf("%s.transport_socket: a listener with certificates received over SDS has no other TLS chains", path)
		}
		if len(appProtocols) > 0 {
			return params, nil, fmt.Errorf("%s.filter_chain_match.application_protocols: only with certificates received over SDS", path)
		}
		if len(chain.GetFilterChainMatch().GetServerNames()) > 0 {
			return params, nil, fmt.Errorf("%s.filter_chain_match.server_names: only with certificates received over SDS", path)
		}
		if !haveIdentity {
			return params, nil, fmt.Errorf("%s.transport_socket: %s", path, errNoIdentity)
		}
		common := ctx.GetCommonTlsContext()
		if common.GetCombinedValidationContext() != nil {
			return params, nil, fmt.Errorf("%s.transport_socket.typed_config.common_tls_context.combined_validation_context: not supported on a listener", path)
		}
		params.bundle = common.GetValidationContextSdsSecretConfig().GetName()
		params.requireClientCert = ctx.GetRequireClientCertificate().GetValue()
		if params.requireClientCert && params.bundle == "" {
			return params, nil, fmt.Errorf("%s.transport_socket.typed_config.common_tls_context.validation_context_sds_secret_config: required with require_client_certificate", path)
		}
		params.alpn = strings.Join(common.GetAlpnProtocols(), ",")
	}
	switch {
	case tlsChain && plainChain:
		params.mode = modePermissive
	case tlsChain:
		params.mode = modeTLS
	}
	return params, terminate, nil
}

// matchKey identifies what a filter chain match selects, for the check
// that no two chains select the same connections.
func matchKey(m *listenerv3.FilterChainMatch) string {
	return m.GetTransportProtocol() + "/" + strings.Join(m.GetServerNames(), ",") + "/" + strings.Join(m.GetApplicationProtocols(), ",")
}

// serverTLSConfig is the tls.Config of a TLS listener: the certificate and
// the trust bundle are looked up on every handshake, so rotations apply to
// new connections without rebinding.
func (p *Proxy) serverTLSConfig(params serverParams) (*tls.Config, error) {
	var next []string
	for alpn := range strings.SplitSeq(params.tls.alpn, ",") {
		switch {
		case alpn == "h2" && params.h2c, alpn == "http/1.1" && params.http1:
			next = append(next, alpn)
		}
	}
	if !params.http1 && len(next) == 0 {
		return nil, errors.New("alpn_protocols: must offer h2 for codec_type HTTP2")
	}
	identity, bundleName, require := p.opts.Identity, params.tls.bundle, params.tls.requireClientCert
	if identity == nil {
		return nil, errors.New(errNoIdentity)
	}
	// The session ticket keys change with the proxy's certificate: a
	// session of the previous certificate (or of a peer's, carried in the
	// ticket) is not resumed, so that every connection starts with current
	// certificates and is retired long before they expire.
	var ticketsFor atomic.Pointer[tls.Certificate]
	var cfg *tls.Config
	cfg = &tls.Config{
		MinVersion: meshtls.MinVersion,
		NextProtos: next,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := identity.Certificate(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("the proxy has no certificate yet")
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if cur := identity.Certificate(); cur != nil && ticketsFor.Swap(cur) != cur {
				var key [32]byte
				if _, err := rand.Read(key[:]); err != nil {
					return nil, fmt.Errorf("session ticket key: %w", err)
				}
				cfg.SetSessionTicketKeys([][32]byte{key})
			}
			return nil, nil
		},
		ClientAuth: tls.RequestClientCert,
		// Verified here rather than with ClientCAs so that the current
		// bundle applies, and on session resumption too (where crypto/tls
		// also refuses a session whose client certificate expired).
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if require {
					return errors.New("client certificate required")
				}
				return nil
			}
			_, err := meshtls.VerifyPeer(cs.PeerCertificates, p.trustBundle(bundleName), nil, time.Now())
			return err
		},
	}
	if require {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	return cfg, nil
}

// connIdentity is the http.Server ConnContext of TLS listeners: the peer's
// verified SPIFFE ID, read once per connection (the handshake is complete
// when the connection is accepted), and when the connection retires.
func connIdentity(ctx context.Context, c net.Conn) context.Context {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ctx
	}
	if ec, ok := tc.NetConn().(*meshtls.ExpiringConn); ok {
		if at := ec.RetireAt(); !at.IsZero() {
			ctx = context.WithValue(ctx, retireKey{}, at)
		}
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		return peer.WithIdentity(ctx, meshtls.SPIFFEID(certs[0]))
	}
	return ctx
}

// retireKey is the context key of a mesh TLS connection's retirement time.
type retireKey struct{}

// retireExpiring is the handler of TLS listeners: a request on a connection
// past its retirement time (meshtls.RetireAt: one of its certificates is
// about to expire) is answered with Connection: close, so that the caller
// opens a new connection, with current certificates, for the next one
// (HTTP/2: the connection is shut down gracefully), instead of the
// connection being cut when the certificate expires.
func retireExpiring(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if at, ok := r.Context().Value(retireKey{}).(time.Time); ok && !time.Now().Before(at) {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// ownLeaf is the certificate a server configuration presents now (the
// proxy's, from its GetCertificate), nil when none.
func ownLeaf(cfg *tls.Config) *x509.Certificate {
	if cfg.GetCertificate == nil {
		return nil
	}
	cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || cert == nil {
		return nil
	}
	return cert.Leaf
}

// tlsListener accepts connections, completes their TLS handshake (or, when
// permissive, tells TLS from plaintext by the first byte) in a goroutine per
// connection, and hands them to the http.Server ready to serve.
type tlsListener struct {
	inner      net.Listener
	config     *tls.Config
	permissive bool
	logger     *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	start  sync.Once
	conns  chan net.Conn
}

func newTLSListener(inner net.Listener, config *tls.Config, permissive bool, logger *slog.Logger) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tlsListener{
		inner: inner, config: config, permissive: permissive, logger: logger,
		ctx: ctx, cancel: cancel, conns: make(chan net.Conn),
	}
}

// Accept returns the next connection whose handshake (or peek) succeeded.
func (l *tlsListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and aborts handshakes in progress.
func (l *tlsListener) Close() error {
	l.cancel()
	return l.inner.Close()
}

// Addr is the bound address.
func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

func (l *tlsListener) acceptLoop() {
	retry := backoff.New(acceptRetryInitial, acceptRetryMax)
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				l.cancel()
				return
			}
			wait := retry.Next()
			l.logger.Warn("accept failed; retrying", "error", err, "retry_in", wait)
			if !backoff.Sleep(l.ctx, wait) {
				return
			}
			continue
		}
		retry.Reset()
		go l.handshake(c)
	}
}

// handshake peeks (when permissive) and runs the TLS handshake of c, bounded
// by handshakeTimeout and by the listener's life, then hands the connection
// to Accept.
func (l *tlsListener) handshake(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := context.AfterFunc(l.ctx, func() { _ = c.SetDeadline(time.Now()) })
	conn, err := l.prepare(c)
	// Once handed over, closing the listener must not cut the connection
	// (graceful drain): detach from l.ctx first.
	if !stop() || err != nil {
		if err != nil {
			l.logger.Debug("inbound connection refused", "remote", c.RemoteAddr().String(), "error", err)
		}
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.conns <- conn:
	case <-l.ctx.Done():
		_ = conn.Close()
	}
}

// prepare returns c ready to serve: a completed TLS connection, or (when
// permissive and the first byte is not a TLS handshake record) c itself
// with that byte replayed.
func (l *tlsListener) prepare(c net.Conn) (net.Conn, error) {
	var conn net.Conn = c
	if l.permissive {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return nil, fmt.Errorf("reading the first byte: %w", err)
		}
		conn = &peekedConn{Conn: c, first: first[0], pending: true}
		if first[0] != tlsRecordHandshake {
			return conn, nil // plaintext: no identity
		}
	}
	// The certificate presented, looked up before the handshake: renewed
	// in between, it is the older, which retires the connection earlier.
	own := ownLeaf(l.config)
	ec := meshtls.NewExpiringConn(conn)
	tc := tls.Server(ec, l.config)
	if err := tc.HandshakeContext(l.ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	// The connection ends when the client's certificate expires (a
	// resumed session carries the original one).
	if leaf := meshtls.PeerLeaf(tc.ConnectionState().PeerCertificates); leaf != nil {
		ec.Expire(leaf.NotAfter, meshtls.RetireAt(leaf, own))
	}
	return tc, nil
}

// peekedConn replays the byte read to tell TLS from plaintext.
type peekedConn struct {
	net.Conn
	first   byte
	pending bool
}

// NetConn is the connection under c (as tls.Conn.NetConn).
func (c *peekedConn) NetConn() net.Conn { return c.Conn }

func (c *peekedConn) Read(b []byte) (int, error) {
	if c.pending && len(b) > 0 {
		b[0] = c.first
		c.pending = false
		return 1, nil
	}
	return c.Conn.Read(b)
}

// common is ctx's common_tls_context.
func common(ctx *tlsv3.DownstreamTlsContext) *tlsv3.CommonTlsContext {
	return ctx.GetCommonTlsContext()
}
