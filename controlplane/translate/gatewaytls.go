package translate

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// ListenerCertificatePrefix starts the name of the SDS secret of a
// Gateway listener's certificate: "listener-cert/<namespace>/<secret>".
const ListenerCertificatePrefix = "listener-cert/"

// RedactedKey replaces private keys in config dumps.
const RedactedKey = "[redacted]"

// listenerCertificateName is the SDS secret name of the certificate of the
// Secret namespace/name.
func listenerCertificateName(secret string) string { return ListenerCertificatePrefix + secret }

// listenerCertificateSecret is the SDS secret of a listener certificate.
func listenerCertificateSecret(c *model.Certificate) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: listenerCertificateName(c.Secret),
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.CertPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.KeyPEM}},
		}},
	}
}

// tlsVersions maps a listener's minimum TLS version to Envoy's.
var tlsVersions = map[string]tlsv3.TlsParameters_TlsProtocol{
	"1.2": tlsv3.TlsParameters_TLSv1_2,
	"1.3": tlsv3.TlsParameters_TLSv1_3,
}

// terminateTLS makes l, the plaintext listener of a port of HTTPS
// listeners, terminate TLS: the tls_inspector reads the SNI, and a filter
// chain per HTTPS listener (filter_chain_match.server_names its hostname;
// none for a listener without one, the default) presents the listener's
// certificates, SDS secrets. When every listener has a hostname, a last
// chain without server_names presents the first one's certificates to
// clients with no or another SNI. It returns the SDS secrets.
func terminateTLS(l *listenerv3.Listener, tls *model.PortTLS) ([]*tlsv3.Secret, error) {
	inspector, err := anypb.New(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, fmt.Errorf("listener %q: tls inspector: %w", l.Name, err)
	}
	l.ListenerFilters = []*listenerv3.ListenerFilter{{
		Name:       tlsInspectorName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
	}}
	filters := l.FilterChains[0].Filters
	var chains []*listenerv3.FilterChain
	var secrets []*tlsv3.Secret
	seen := map[string]bool{}
	var hasDefault bool
	first := -1 // the first listener's chain (not a challenge's)
	for _, c := range tls.Chains {
		ts, err := downstreamListenerTLS(c)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %s: %w", l.Name, c.Listener, err)
		}
		match := &listenerv3.FilterChainMatch{TransportProtocol: transportProtocolTLS, ApplicationProtocols: c.ApplicationProtocols}
		switch {
		case c.Hostname != "*":
			match.ServerNames = []string{c.Hostname}
		case len(c.ApplicationProtocols) == 0:
			hasDefault = true
		}
		if first < 0 && len(c.ApplicationProtocols) == 0 {
			first = len(chains)
		}
		chains = append(chains, &listenerv3.FilterChain{
			Name:             c.Listener,
			FilterChainMatch: match,
			Filters:          filters,
			TransportSocket:  ts,
		})
		for _, cert := range c.Certificates {
			if !seen[cert.Secret] {
				seen[cert.Secret] = true
				secrets = append(secrets, listenerCertificateSecret(cert))
			}
		}
	}
	if !hasDefault && first >= 0 {
		chains = append(chains, &listenerv3.FilterChain{
			Name:             chains[first].Name + "/default",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: transportProtocolTLS},
			Filters:          filters,
			TransportSocket:  proto.CloneOf(chains[first].TransportSocket),
		})
	}
	// The most specific server names first: the order a reader expects
	// (the proxy, as Envoy, matches by specificity whatever the order).
	l.FilterChains = chains
	slices.SortFunc(secrets, func(a, b *tlsv3.Secret) int { return strings.Compare(a.Name, b.Name) })
	return secrets, nil
}

// downstreamListenerTLS is the transport socket of an HTTPS listener's
// filter chain: its certificates (SDS), TLS versions and cipher suites,
// ALPN h2 and http/1.1. No client certificate is asked for.
func downstreamListenerTLS(c *model.TLSChain) (*corev3.TransportSocket, error) {
	ctx, err := downstreamTLSContext(c)
	if err != nil {
		return nil, err
	}
	return transportSocket(ctx)
}

// downstreamTLSContext is the TLS context of downstreamListenerTLS.
func downstreamTLSContext(c *model.TLSChain) (*tlsv3.DownstreamTlsContext, error) {
	minVersion, ok := tlsVersions[c.MinVersion]
	if !ok {
		return nil, fmt.Errorf("unknown TLS version %q", c.MinVersion)
	}
	common := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: minVersion,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			CipherSuites:              c.CipherSuites,
		},
		AlpnProtocols: []string{"h2", "http/1.1"},
	}
	if len(c.ApplicationProtocols) > 0 {
		common.AlpnProtocols = c.ApplicationProtocols
	}
	for _, cert := range c.Certificates {
		common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs,
			&tlsv3.SdsSecretConfig{Name: listenerCertificateName(cert.Secret), SdsConfig: adsConfigSource()})
	}
	return &tlsv3.DownstreamTlsContext{CommonTlsContext: common}, nil
}

// redactSecret is s as config dumps show it: a private key replaced by
// RedactedKey.
func redactSecret(s *tlsv3.Secret) *tlsv3.Secret {
	if s.GetTlsCertificate().GetPrivateKey() == nil {
		return s
	}
	out := proto.CloneOf(s)
	out.GetTlsCertificate().PrivateKey = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: RedactedKey}}
	return out
}

// hstsHeader is the header of HTTP Strict Transport Security (RFC 6797).
const hstsHeader = "Strict-Transport-Security"

// setHSTS makes every response of an HTTPS listener's virtual host carry
// Strict-Transport-Security: value (the listener's meshgate.dev/hsts
// option), replacing the backend's; nothing when value is "".
func setHSTS(vhost *routev3.VirtualHost, value string) {
	if value == "" {
		return
	}
	vhost.ResponseHeadersToAdd = append(vhost.ResponseHeadersToAdd, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: hstsHeader, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
}
