package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// ACMECertificate says that an HTTPS listener's certificate is obtained
// over ACME: from which issuer, for which name. The compiled model has no
// Certificates for such a chain; the control plane adds those it holds
// (WithACME).
type ACMECertificate struct {
	Issuer   ACMEIssuer `json:"issuer"`
	Hostname string     `json:"hostname"`
}

// ACMEIssuer is an ACMEIssuer resource as the control plane uses it.
type ACMEIssuer struct {
	NamespacedName
	Server string `json:"server"`
	Email  string `json:"email,omitempty"`
	// CAFile is the path of the PEM roots of the directory's HTTPS
	// certificate; empty: the system's.
	CAFile             string   `json:"caFile,omitempty"`
	Challenges         []string `json:"challenges"`
	RenewalWindowRatio float64  `json:"renewalWindowRatio"`
}

// DirectResponse answers a request with a fixed status and body.
type DirectResponse struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
}

// ACMEListener is an HTTPS listener of a gateway whose certificate is
// obtained over ACME.
type ACMEListener struct {
	Gateway  NamespacedName
	Listener string
	ACME     ACMECertificate
}

// ACMEListeners lists the model's HTTPS listeners whose certificates are
// obtained over ACME, in gateway, port and listener order.
func (m *Model) ACMEListeners() []ACMEListener {
	var out []ACMEListener
	for _, gw := range m.Gateways {
		for _, p := range gw.Ports {
			if p.TLS == nil {
				continue
			}
			for _, c := range p.TLS.Chains {
				if c.ACME != nil {
					out = append(out, ACMEListener{Gateway: gw.NamespacedName, Listener: c.Listener, ACME: *c.ACME})
				}
			}
		}
	}
	return out
}

// ACMEMaterial is what the control plane holds for the listeners whose
// certificates are obtained over ACME.
type ACMEMaterial struct {
	// Certificates by hostname.
	Certificates map[string]*Certificate
	// HTTPChallenges are the HTTP-01 challenges being validated.
	HTTPChallenges []HTTPChallenge
	// TLSALPNChallenges are the TLS-ALPN-01 challenges being validated.
	TLSALPNChallenges []TLSALPNChallenge
}

// TLSALPNChallenge is a TLS-ALPN-01 challenge (RFC 8737): a handshake for
// Hostname offering only ALPN "acme-tls/1" gets Certificate, the
// challenge's self-signed certificate.
type TLSALPNChallenge struct {
	Hostname    string
	Certificate *Certificate
}

// ACMETLSALPNProtocol is the ALPN protocol of TLS-ALPN-01 challenges.
const ACMETLSALPNProtocol = "acme-tls/1"

// ACMEChallengeSecret is the Certificate.Secret of the TLS-ALPN-01
// challenge certificate of hostname.
func ACMEChallengeSecret(hostname string) string { return "acme-challenge/" + hostname }

// HTTPChallenge is an HTTP-01 challenge: a GET of
// /.well-known/acme-challenge/<Token> for Hostname on port 80 is answered
// KeyAuthorization.
type HTTPChallenge struct {
	Hostname, Token, KeyAuthorization string
}

// ACMEChallengePath is the path prefix of HTTP-01 challenges (RFC 8555
// 8.3).
const ACMEChallengePath = "/.well-known/acme-challenge/"

// ACMECertificateSecret is the Certificate.Secret of the certificate of
// hostname obtained over ACME (the SDS secret
// "listener-cert/acme/<hostname>").
func ACMECertificateSecret(hostname string) string { return "acme/" + hostname }

// NewACMECertificate is the listener certificate of an ACME certificate.
func NewACMECertificate(hostname string, certPEM, keyPEM []byte) *Certificate {
	sum := sha256.Sum256(slices.Concat(certPEM, []byte{0}, keyPEM))
	return &Certificate{Secret: ACMECertificateSecret(hostname), Digest: hex.EncodeToString(sum[:16]), CertPEM: certPEM, KeyPEM: keyPEM}
}

// WithACME returns a copy of m with what the control plane holds for its
// ACME listeners: each such listener presents its certificate, or, while
// there is none, is left out (a port left without a listener is not
// served: never as plaintext); every plaintext port of a gateway with an
// ACME listener answers the HTTP-01 challenges of its hostnames, and each
// HTTPS port of an ACME listener the TLS-ALPN-01 challenges of its
// hostname (a chain of its own, ApplicationProtocols "acme-tls/1", while
// the challenge is validated). m is not
// modified; without ACME listeners it is returned as it is.
func (m *Model) WithACME(mat ACMEMaterial) (*Model, error) {
	if len(m.ACMEListeners()) == 0 {
		return m, nil
	}
	out := *m
	out.Gateways = make([]*Gateway, len(m.Gateways))
	out.gateways = make(map[NamespacedName]*Gateway, len(m.Gateways))
	for i, gw := range m.Gateways {
		out.Gateways[i] = gatewayWithACME(gw, mat)
		out.gateways[gw.NamespacedName] = out.Gateways[i]
	}
	if err := out.hashRouting(); err != nil {
		return nil, err
	}
	if err := out.hashEndpoints(); err != nil {
		return nil, err
	}
	return &out, nil
}

// gatewayWithACME is gw (or a copy) as WithACME makes it.
func gatewayWithACME(gw *Gateway, mat ACMEMaterial) *Gateway {
	var hosts []string
	for _, p := range gw.Ports {
		if p.TLS == nil {
			continue
		}
		for _, c := range p.TLS.Chains {
			if c.ACME != nil {
				hosts = append(hosts, c.ACME.Hostname)
			}
		}
	}
	if len(hosts) == 0 {
		return gw
	}
	out := *gw
	out.Ports = make([]*GatewayPort, 0, len(gw.Ports))
	for _, p := range gw.Ports {
		if p.TLS == nil {
			out.Ports = append(out.Ports, portWithChallenges(p, hosts, mat.HTTPChallenges))
			continue
		}
		port := *p
		port.TLS = &PortTLS{}
		for _, c := range p.TLS.Chains {
			if c.ACME == nil {
				port.TLS.Chains = append(port.TLS.Chains, c)
				continue
			}
			cert := mat.Certificates[c.ACME.Hostname]
			if cert == nil {
				continue // not programmed until its certificate is obtained
			}
			chain := *c
			chain.Certificates = []*Certificate{cert}
			port.TLS.Chains = append(port.TLS.Chains, &chain)
		}
		for _, c := range p.TLS.Chains {
			if c.ACME == nil {
				continue
			}
			for _, ch := range mat.TLSALPNChallenges {
				if ch.Hostname == c.ACME.Hostname {
					port.TLS.Chains = append(port.TLS.Chains, &TLSChain{Listener: c.Listener + "/acme-tls-alpn-01", Hostname: ch.Hostname,
						Certificates: []*Certificate{ch.Certificate}, MinVersion: "1.2", ApplicationProtocols: []string{ACMETLSALPNProtocol}})
				}
			}
		}
		if len(port.TLS.Chains) > 0 {
			out.Ports = append(out.Ports, &port)
		}
	}
	return &out
}

// portWithChallenges is p (or a copy) answering the HTTP-01 challenges of
// hosts: a rule for each, first in the virtual host of its hostname (one
// made, with the rules of the virtual host that served the name, when
// there is none).
func portWithChallenges(p *GatewayPort, hosts []string, challenges []HTTPChallenge) *GatewayPort {
	var mine []HTTPChallenge
	for _, ch := range challenges {
		if slices.Contains(hosts, ch.Hostname) {
			mine = append(mine, ch)
		}
	}
	if len(mine) == 0 {
		return p
	}
	out := *p
	out.VirtualHosts = slices.Clone(p.VirtualHosts)
	for _, ch := range mine {
		rule := &Rule{
			Route:  NamespacedName{Name: "acme-http-01"},
			Match:  Match{Path: PathMatch{Kind: PathExact, Value: ACMEChallengePath + ch.Token}, Method: "GET"},
			Action: &Action{DirectResponse: &DirectResponse{Status: 200, Body: ch.KeyAuthorization}},
		}
		i := slices.IndexFunc(out.VirtualHosts, func(vh *VirtualHost) bool { return vh.Hostname == ch.Hostname })
		if i >= 0 {
			vh := *out.VirtualHosts[i]
			vh.Rules = slices.Concat([]*Rule{rule}, vh.Rules)
			out.VirtualHosts[i] = &vh
			continue
		}
		vh := &VirtualHost{Hostname: ch.Hostname, Rules: []*Rule{rule}}
		if served := servingVirtualHost(out.VirtualHosts, ch.Hostname); served != nil {
			vh.Rules = append(vh.Rules, served.Rules...)
		}
		out.VirtualHosts = append(out.VirtualHosts, vh)
		slices.SortFunc(out.VirtualHosts, func(a, b *VirtualHost) int { return cmp.Compare(a.Hostname, b.Hostname) })
	}
	return &out
}

// servingVirtualHost is the virtual host that serves host: the longest
// "*." wildcard suffix, else "*"; nil for none.
func servingVirtualHost(vhs []*VirtualHost, host string) *VirtualHost {
	var best *VirtualHost
	for _, vh := range vhs {
		switch {
		case strings.HasPrefix(vh.Hostname, "*.") && strings.HasSuffix(host, vh.Hostname[1:]):
			if best == nil || best.Hostname == "*" || len(vh.Hostname) > len(best.Hostname) {
				best = vh
			}
		case vh.Hostname == "*" && best == nil:
			best = vh
		}
	}
	return best
}

// GetChains is p's chains; none for a nil p (a plaintext port).
func (p *PortTLS) GetChains() []*TLSChain {
	if p == nil {
		return nil
	}
	return p.Chains
}
