package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/meshtls"
)

// TransportSocketMatchKey is the endpoint metadata namespace a cluster's
// transport_socket_matches are matched against.
const TransportSocketMatchKey = "envoy.transport_socket_match"

// localCertificateName is the SDS name of the proxy's own certificate.
const localCertificateName = "default"

// tlsSessionsPerMatch is how many TLS sessions (resumption tickets) a
// transport_socket_matches entry keeps, one per endpoint address: a new
// connection to a known endpoint resumes instead of a full handshake.
const tlsSessionsPerMatch = 256

// tlsFailureLogInterval bounds how often a failing endpoint's TLS error is
// logged.
const tlsFailureLogInterval = time.Minute

// TLS is what a cluster needs for mesh mTLS. Both functions are called on
// every TLS handshake, so a rotated certificate or a new trust bundle applies
// to the next connection without flushing the pools.
type TLS struct {
	// Certificate returns the proxy's current certificate (the "default"
	// secret), nil when it has none yet.
	Certificate func() *tls.Certificate
	// TrustBundle returns the current bundle of the named SDS validation
	// secret (ROOTCA), nil when it was not received yet.
	TrustBundle func(secretName string) *meshtls.Bundle
}

// Option configures NewCluster.
type Option func(*clusterOptions)

type clusterOptions struct {
	tls     TLS
	checked bool
	stats   Stats
	// healthProbe replaces the active health check's probe (tests).
	healthProbe func(ctx context.Context, address string) error
}

// Checked says the cluster has passed xdscheck already (the proxy's apply
// path checks every resource once, before building anything): NewCluster
// does not check it again.
func Checked() Option { return func(o *clusterOptions) { o.checked = true } }

// WithTLS lets the cluster dial the endpoints its transport_socket_matches
// select over mTLS. Without it such a cluster is rejected.
func WithTLS(t TLS) Option { return func(o *clusterOptions) { o.tls = t } }

// tlsMatch is one transport_socket_matches entry.
type tlsMatch struct {
	name      string
	match     map[string]*structpb.Value
	transport *http.Transport
	fast      *h1Client // HTTP/1.1 over the TLS dialer; nil for h2
	sessions  *sessionCache
}

// buildMatches reads transport_socket_matches: one TLS transport per entry.
func (c *Cluster) buildMatches(connectTimeout time.Duration) ([]*tlsMatch, error) {
	entries := c.config.GetTransportSocketMatches()
	if len(entries) == 0 {
		return nil, nil
	}
	if c.tls.Certificate == nil || c.tls.TrustBundle == nil {
		return nil, errors.New("transport_socket_matches: mTLS needs the proxy's identity, and this proxy has none")
	}
	matches := make([]*tlsMatch, 0, len(entries))
	for i, e := range entries {
		path := fmt.Sprintf("transport_socket_matches[%d]", i)
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := e.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return nil, fmt.Errorf("%s.transport_socket.typed_config: %w", path, err)
		}
		cfg, protocol, err := c.clientTLS(ctx, path+".transport_socket.typed_config")
		if err != nil {
			return nil, err
		}
		sessions := newSessionCache(c.tls.Certificate)
		cfg.ClientSessionCache = sessions
		m := &tlsMatch{
			name:      e.GetName(),
			match:     e.GetMatch().GetFields(),
			transport: c.newTLSTransport(protocol, connectTimeout, cfg),
			sessions:  sessions,
		}
		if protocol == HTTP1 {
			m.fast = newH1Client(m.transport.DialContext)
		}
		matches = append(matches, m)
	}
	return matches, nil
}

// clientTLS builds the client tls.Config of an UpstreamTlsContext and the
// HTTP protocol spoken over it.
func (c *Cluster) clientTLS(ctx *tlsv3.UpstreamTlsContext, path string) (*tls.Config, Protocol, error) {
	common := ctx.GetCommonTlsContext()
	certs := common.GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 || certs[0].GetName() != localCertificateName || certs[0].GetSdsConfig() != nil {
		return nil, 0, fmt.Errorf("%s.common_tls_context.tls_certificate_sds_secret_configs: want exactly [{name: %q}]", path, localCertificateName)
	}
	combined := common.GetCombinedValidationContext()
	if combined == nil {
		return nil, 0, fmt.Errorf("%s.common_tls_context.combined_validation_context: required (the peer's SPIFFE ID and the trust bundle)", path)
	}
	bundleName := combined.GetValidationContextSdsSecretConfig().GetName()
	var allowed []string
	for _, m := range combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		allowed = append(allowed, m.GetMatcher().GetExact())
	}
	if len(allowed) == 0 {
		return nil, 0, fmt.Errorf("%s.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names: required", path)
	}

	// The protocol over TLS: what ALPN offers, else the cluster's protocol.
	protocol := c.protocol
	alpn := common.GetAlpnProtocols()
	switch {
	case len(alpn) == 1 && alpn[0] == "h2":
		protocol = H2C // HTTP/2 with prior knowledge, over the TLS connection
	case len(alpn) == 1 && alpn[0] == "http/1.1":
		protocol = HTTP1
	}
	next := "http/1.1"
	if protocol == H2C {
		next = "h2"
	}
	if len(alpn) > 0 && !slices.Contains(alpn, next) {
		return nil, 0, fmt.Errorf("%s.common_tls_context.alpn_protocols: %v does not include %q, the cluster's protocol", path, alpn, next)
	}

	getCert, getBundle := c.tls.Certificate, c.tls.TrustBundle
	cfg := &tls.Config{
		MinVersion: meshtls.MinVersion,
		ServerName: ctx.GetSni(),
		NextProtos: []string{next},
		// The peer is verified by its SPIFFE ID, not a host name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies chain and SAN
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := getCert(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("the proxy has no certificate yet")
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := meshtls.VerifyPeer(cs.PeerCertificates, getBundle(bundleName), allowed, time.Now())
			if err != nil {
				return err
			}
			if cs.NegotiatedProtocol != "" && cs.NegotiatedProtocol != next {
				return fmt.Errorf("peer negotiated ALPN %q, want %q", cs.NegotiatedProtocol, next)
			}
			return nil
		},
	}
	return cfg, protocol, nil
}

// newTLSTransport is a pooled transport whose connections are mTLS: the URL
// scheme stays http and the dialer does the handshake, so HTTP/1.1 or HTTP/2
// (prior knowledge, after ALPN h2) runs over the TLS connection.
func (c *Cluster) newTLSTransport(protocol Protocol, connectTimeout time.Duration, cfg *tls.Config) *http.Transport {
	t := newTransport(protocol, connectTimeout)
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: tcpKeepAlive}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		raw, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The certificate presented, looked up before the handshake:
		// renewed in between, it is the older, which retires the
		// connection earlier.
		var own *x509.Certificate
		if cert := c.tls.Certificate(); cert != nil {
			own = cert.Leaf
		}
		ec := meshtls.NewExpiringConn(raw)
		conn := tls.Client(ec, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			c.tlsLog.report(c, addr, err)
			// A dial error: the proxy answers 503 upstream connect error.
			return nil, &net.OpError{Op: "dial", Net: network, Addr: raw.RemoteAddr(), Err: fmt.Errorf("mTLS handshake: %w", err)}
		}
		// The connection ends when the endpoint's certificate expires (a
		// resumed session carries the original one); the HTTP/1.1 pool
		// stops reusing it at its retirement time.
		if leaf := meshtls.PeerLeaf(conn.ConnectionState().PeerCertificates); leaf != nil {
			ec.Expire(leaf.NotAfter, meshtls.RetireAt(leaf, own))
		}
		return conn, nil
	}
	t.DialContext = c.countDials(t.DialContext)
	return t
}

// connRetireAt is when a pooled connection should not be reused any more:
// the retirement time of a mesh TLS connection, zero for any other.
func connRetireAt(conn net.Conn) time.Time {
	if tc, ok := unwrapCounted(conn).(*tls.Conn); ok {
		if ec, ok := tc.NetConn().(*meshtls.ExpiringConn); ok {
			return ec.RetireAt()
		}
	}
	return time.Time{}
}

// sessionCache is the TLS client session cache of one
// transport_socket_matches entry. crypto/tls keys it by the endpoint address
// (no SNI is set by the control plane; with one, endpoints sharing it share a
// key and a ticket one of them cannot use costs one full handshake). A
// resumed TLS 1.3 session still runs VerifyConnection, against the current
// trust bundle and with the peer certificate of the original handshake, whose
// expiry ends resumption. The sessions are forgotten when the proxy's own
// certificate changes (a renewal): a session carries the client certificate
// of its full handshake, and one of the previous certificate would let
// connections outlive it. reset forgets every session (Cluster.Close).
type sessionCache struct {
	current atomic.Pointer[tlsCacheBox]
	// own returns the proxy's certificate; owner is the one the sessions
	// were made with.
	own   func() *tls.Certificate
	owner atomic.Pointer[tls.Certificate]
}

// tlsCacheBox lets an interface value live in an atomic.Pointer.
type tlsCacheBox struct{ cache tls.ClientSessionCache }

func newSessionCache(own func() *tls.Certificate) *sessionCache {
	s := &sessionCache{own: own}
	s.reset()
	return s
}

// Get implements tls.ClientSessionCache.
func (s *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	if s.own != nil {
		if cur := s.own(); s.owner.Swap(cur) != cur {
			s.reset()
			return nil, false
		}
	}
	return s.current.Load().cache.Get(key)
}

// Put implements tls.ClientSessionCache.
func (s *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	s.current.Load().cache.Put(key, cs)
}

func (s *sessionCache) reset() {
	s.current.Store(&tlsCacheBox{cache: tls.NewLRUClientSessionCache(tlsSessionsPerMatch)})
}

// matchOf returns the first transport_socket_matches entry whose match is a
// subset of the endpoint's "envoy.transport_socket_match" metadata, nil for
// plaintext.
func (c *Cluster) matchOf(lbe *endpointv3.LbEndpoint) *tlsMatch {
	if len(c.matches) == 0 {
		return nil
	}
	meta := lbe.GetMetadata().GetFilterMetadata()[TransportSocketMatchKey].GetFields()
	for _, m := range c.matches {
		if subsetOf(m.match, meta) {
			return m
		}
	}
	return nil
}

func subsetOf(want, have map[string]*structpb.Value) bool {
	for k, v := range want {
		if !proto.Equal(v, have[k]) {
			return false
		}
	}
	return true
}

// tlsFailureLog rate-limits TLS failure logs: once per endpoint per minute.
type tlsFailureLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *tlsFailureLog) report(c *Cluster, endpoint string, err error) {
	if l.due(endpoint) {
		c.logger.Warn("upstream mTLS handshake failed", "endpoint", endpoint, "error", err)
	}
}

// due reports whether a failure of endpoint is to be logged now, and
// records it.
func (l *tlsFailureLog) due(endpoint string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
	}
	if t, ok := l.last[endpoint]; ok && now.Sub(t) < tlsFailureLogInterval {
		return false
	}
	l.last[endpoint] = now
	return true
}
