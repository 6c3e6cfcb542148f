// Package identity gives a proxy its SPIFFE identity: it generates the
// private key locally, obtains and renews the certificate from the control
// plane's certificate authority, and keeps the trust bundle current. The key
// never leaves the process.
package identity

import "crypto/tls"

// Provider is what the proxy engine needs of an identity: the current
// certificate for TLS handshakes, and a place to deliver trust bundle updates
// received over xDS (the ROOTCA secret).
type Provider interface {
	// SPIFFEID is the proxy's identity,
	// spiffe://<trust-domain>/ns/<namespace>/svc/<service>.
	SPIFFEID() string
	// Certificate returns the current certificate chain and private key. It is
	// called on every TLS handshake: cheap, lock-free, safe for concurrent use.
	// Nil until the first certificate was issued.
	Certificate() *tls.Certificate
	// UpdateTrustBundle replaces the roots the provider uses to verify the
	// control plane with the PEM bundle of the ROOTCA secret, so that a root
	// rotation reaches the control-plane connection too.
	UpdateTrustBundle(pemBundle []byte)
}
