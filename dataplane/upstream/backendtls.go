package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// backendTLS is a cluster's own transport_socket: TLS to the endpoints
// that no transport_socket_matches entry selects (a backend outside the
// mesh, its BackendTLSPolicy), the proxy presenting no certificate.
type backendTLS struct {
	config   *tls.Config
	protocol Protocol
}

// buildBackendTLS reads the cluster's transport_socket, nil when it has
// none: an UpstreamTlsContext with sni, validation_context (trusted_ca
// inline or system_root_certs, match_typed_subject_alt_names of type DNS
// or URI, exact) and alpn_protocols, as xdscheck accepts it.
func (c *Cluster) buildBackendTLS() (*backendTLS, error) {
	ts := c.config.GetTransportSocket()
	if ts == nil {
		return nil, nil
	}
	const path = "transport_socket.typed_config"
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	common := ctx.GetCommonTlsContext()
	validation := common.GetValidationContext()
	if validation == nil || len(common.GetTlsCertificateSdsSecretConfigs()) > 0 {
		return nil, fmt.Errorf("%s.common_tls_context: want validation_context and no certificate", path)
	}
	var roots *x509.CertPool // nil: the system's
	if ca := validation.GetTrustedCa(); ca != nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(ca.GetInlineBytes()) {
			return nil, fmt.Errorf("%s.common_tls_context.validation_context.trusted_ca: no PEM certificate", path)
		}
	} else if validation.GetSystemRootCerts() == nil {
		return nil, fmt.Errorf("%s.common_tls_context.validation_context: trusted_ca or system_root_certs required", path)
	}
	var names []sanMatcher
	for i, m := range validation.GetMatchTypedSubjectAltNames() {
		exact := m.GetMatcher().GetExact()
		if exact == "" {
			return nil, fmt.Errorf("%s.common_tls_context.validation_context.match_typed_subject_alt_names[%d].matcher: want exact", path, i)
		}
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			names = append(names, sanMatcher{dns: strings.ToLower(exact)})
		case tlsv3.SubjectAltNameMatcher_URI:
			names = append(names, sanMatcher{uri: exact})
		default:
			return nil, fmt.Errorf("%s.common_tls_context.validation_context.match_typed_subject_alt_names[%d].san_type: want DNS or URI", path, i)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s.common_tls_context.validation_context.match_typed_subject_alt_names: required", path)
	}
	protocol := c.protocol
	next := "http/1.1"
	if protocol == H2C {
		next = "h2"
	}
	if alpn := common.GetAlpnProtocols(); len(alpn) > 0 && !slices.Contains(alpn, next) {
		return nil, fmt.Errorf("%s.common_tls_context.alpn_protocols: %v does not include %q, the cluster's protocol", path, alpn, next)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         ctx.GetSni(),
		NextProtos:         []string{next},
		ClientSessionCache: tls.NewLRUClientSessionCache(tlsSessionsPerMatch),
		// Verified by VerifyConnection: the chain against roots, then the
		// names of the matchers (Envoy's semantics: the SNI is not a
		// name verified unless a matcher says it).
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies chain and SAN
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyBackend(cs, roots, names, next)
		},
	}
	return &backendTLS{config: cfg, protocol: protocol}, nil
}

// sanMatcher is one match_typed_subject_alt_names entry: a DNS name or a
// URI, exact.
type sanMatcher struct{ dns, uri string }

// verifyBackend verifies a backend's certificate chain against roots (nil:
// the system's) and that the leaf has a name of names.
func verifyBackend(cs tls.ConnectionState, roots *x509.CertPool, names []sanMatcher, alpn string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the backend presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("backend certificate: %w", err)
	}
	if !slices.ContainsFunc(names, func(m sanMatcher) bool { return m.matches(leaf) }) {
		var want []string
		for _, m := range names {
			want = append(want, m.dns+m.uri)
		}
		return fmt.Errorf("backend certificate (DNS names %v) has none of the subject alt names %v", leaf.DNSNames, want)
	}
	if cs.NegotiatedProtocol != "" && cs.NegotiatedProtocol != alpn {
		return fmt.Errorf("backend negotiated ALPN %q, want %q", cs.NegotiatedProtocol, alpn)
	}
	return nil
}

// matches reports whether the certificate has the name: a DNS SAN equal
// to it (case-insensitively) or a wildcard SAN ("*.example.com") covering
// its first label; a URI SAN equal to it.
func (m sanMatcher) matches(cert *x509.Certificate) bool {
	if m.uri != "" {
		return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == m.uri })
	}
	for _, san := range cert.DNSNames {
		san = strings.ToLower(san)
		if san == m.dns {
			return true
		}
		if suffix, ok := strings.CutPrefix(san, "*."); ok {
			if _, rest, found := strings.Cut(m.dns, "."); found && rest == suffix {
				return true
			}
		}
	}
	return false
}

// newBackendTLSTransport is a pooled transport whose connections are TLS to
// a backend: the URL scheme stays http and the dialer does the handshake. A
// failed handshake is a dial error: the proxy answers 503 (response flag
// UF).
func (c *Cluster) newBackendTLSTransport(b *backendTLS, connectTimeout time.Duration) *http.Transport {
	t := newTransport(b.protocol, connectTimeout)
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: tcpKeepAlive}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		raw, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, b.config)
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			c.tlsLog.reportBackend(c, addr, err)
			return nil, &net.OpError{Op: "dial", Net: network, Addr: raw.RemoteAddr(), Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		return conn, nil
	}
	return t
}

// reportBackend logs a failed TLS handshake with a backend, at most once
// per endpoint per tlsFailureLogInterval.
func (l *tlsFailureLog) reportBackend(c *Cluster, endpoint string, err error) {
	if l.due(endpoint) {
		c.logger.Warn("upstream TLS handshake failed", "endpoint", endpoint, "error", err)
	}
}
