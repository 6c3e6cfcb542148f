package dataplane

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// terminateChain is one filter chain of a listener that terminates TLS
// with certificates received over SDS (a gateway's HTTPS listener): the
// server names (SNI) it is chosen for, none for the default chain.
type terminateChain struct {
	serverNames []string
	// appProtocols, when set, select the chain only for a client that
	// offers one of them by ALPN (filter_chain_match.application_protocols:
	// the ACME TLS-ALPN-01 challenge, "acme-tls/1"); its alpn is then
	// offered as it is.
	appProtocols []string
	certs        []string // SDS secret names
	minVersion   uint16
	ciphers      []uint16 // none: crypto/tls's defaults
	alpn         []string
}

// goCipherSuites maps the IANA names of crypto/tls's cipher suites to
// their IDs.
func goCipherSuite(iana string) (uint16, bool) {
	for _, s := range tls.CipherSuites() {
		if s.Name == iana {
			return s.ID, true
		}
	}
	return 0, false
}

// parseTerminateChain reads the TLS context of a terminating chain.
func parseTerminateChain(names, appProtocols []string, ctx *tlsv3.DownstreamTlsContext) (terminateChain, error) {
	common := ctx.GetCommonTlsContext()
	c := terminateChain{serverNames: names, appProtocols: appProtocols, minVersion: tls.VersionTLS12, alpn: common.GetAlpnProtocols()}
	if ctx.GetRequireClientCertificate().GetValue() || common.GetValidationContextType() != nil {
		return c, errors.New("common_tls_context: client certificates are not supported with certificates received over SDS")
	}
	for i, ref := range common.GetTlsCertificateSdsSecretConfigs() {
		if ref.GetSdsConfig() == nil {
			return c, fmt.Errorf("common_tls_context.tls_certificate_sds_secret_configs[%d]: sds_config required beside certificates received over SDS", i)
		}
		c.certs = append(c.certs, ref.GetName())
	}
	if common.GetTlsParams().GetTlsMinimumProtocolVersion() == tlsv3.TlsParameters_TLSv1_3 {
		c.minVersion = tls.VersionTLS13
	}
	for _, name := range common.GetTlsParams().GetCipherSuites() {
		id, ok := goCipherSuite(xdscheck.CipherSuites[name])
		if !ok {
			return c, fmt.Errorf("common_tls_context.tls_params.cipher_suites: %q not supported", name)
		}
		c.ciphers = append(c.ciphers, id)
	}
	return c, nil
}

// selectChain is the index of the chain a server name and the client's
// ALPN protocols (offered) select, as Envoy matches server_names and
// application_protocols: a chain of application protocols one of which
// is offered, for the exact name; else, of the chains without
// application protocols, an exact name, else the longest "*." wildcard
// suffix, else the chain without server names; -1 for none.
func selectChain(chains []terminateChain, name string, offered []string) int {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	best, bestLen, fallback := -1, -1, -1
	for i, c := range chains {
		if len(c.appProtocols) > 0 && slices.Contains(c.serverNames, name) && slices.ContainsFunc(c.appProtocols, func(p string) bool { return slices.Contains(offered, p) }) {
			return i
		}
	}
	for i, c := range chains {
		if len(c.appProtocols) > 0 {
			continue
		}
		if len(c.serverNames) == 0 {
			if fallback < 0 {
				fallback = i
			}
			continue
		}
		for _, sn := range c.serverNames {
			switch {
			case sn == name:
				return i
			case strings.HasPrefix(sn, "*.") && strings.HasSuffix(name, sn[1:]) && len(name) > len(sn)-1 && len(sn) > bestLen:
				best, bestLen = i, len(sn)
			}
		}
	}
	if best >= 0 {
		return best
	}
	return fallback
}

// terminateTLSConfig is the tls.Config of a listener terminating TLS: per
// handshake, the chain the SNI selects, and its certificate looked up in
// the accepted secrets then (so that a certificate received anew applies
// to the next handshakes, without a rebind, and the connections open keep
// theirs).
func (p *Proxy) terminateTLSConfig(spec *listenerSpec) (*tls.Config, error) {
	configs := make([]*tls.Config, len(spec.terminate))
	for i, c := range spec.terminate {
		var next []string
		for _, alpn := range c.alpn {
			if alpn == "h2" && spec.params.h2c || alpn == "http/1.1" && spec.params.http1 || len(c.appProtocols) > 0 {
				next = append(next, alpn)
			}
		}
		certs := c.certs
		configs[i] = &tls.Config{
			MinVersion:   c.minVersion,
			CipherSuites: c.ciphers,
			NextProtos:   next,
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return p.listenerCertificate(hello, certs)
			},
		}
	}
	chains := spec.terminate
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			i := selectChain(chains, hello.ServerName, hello.SupportedProtos)
			if i < 0 {
				return nil, fmt.Errorf("no certificate for server name %q", hello.ServerName)
			}
			return configs[i], nil
		},
	}, nil
}

// listenerCertificate is, of the certificates received over SDS as names,
// the first the client supports (or the first).
func (p *Proxy) listenerCertificate(hello *tls.ClientHelloInfo, names []string) (*tls.Certificate, error) {
	m := p.certs.Load()
	var first *tls.Certificate
	for _, name := range names {
		var c *tls.Certificate
		if m != nil {
			c = (*m)[name]
		}
		if c == nil {
			continue
		}
		if first == nil {
			first = c
		}
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	if first == nil {
		return nil, errors.New("the listener's certificate has not been received")
	}
	return first, nil
}

// misdirected answers 421 Misdirected Request to a request whose Host
// selects another filter chain than the client's SNI did (RFC 9110
// 15.5.20; the Gateway API's HTTPS listener isolation): the connection
// was set up for another listener, with its certificate. Requests without
// SNI are not checked. Used only on listeners with server_names.
func misdirected(next http.Handler, chains []terminateChain) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && r.TLS.ServerName != "" {
			if selectChain(chains, r.TLS.ServerName, nil) != selectChain(chains, router.HostWithoutPort(r.Host), nil) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusMisdirectedRequest)
				_, _ = w.Write([]byte("misdirected request: the host is not served on this TLS connection (its server name selected another listener)\n"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hasServerNames reports whether some chain is selected by server name.
func hasServerNames(chains []terminateChain) bool {
	return slices.ContainsFunc(chains, func(c terminateChain) bool { return len(c.serverNames) > 0 })
}
