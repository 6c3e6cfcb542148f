// Package meshtls holds the TLS pieces shared by the proxy's inbound
// listeners and upstream clusters: the trust bundle of an SDS validation
// secret (ROOTCA) and the verification of a mesh peer's certificate chain and
// SPIFFE ID against it.
package meshtls

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
)

// MinVersion is the lowest TLS version spoken on mesh hops (docs/xds.md).
const MinVersion = 0x0303 // tls.VersionTLS12

// Bundle is a parsed trust bundle. It is immutable once built.
type Bundle struct {
	// PEM is the bundle as received.
	PEM []byte
	// Pool holds the root certificates.
	Pool *x509.CertPool
	// Roots describe the certificates (no key material exists in a bundle).
	Roots []Root
}

// Root describes one trusted root certificate.
type Root struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"` // of the DER, hex
	NotAfter time.Time `json:"not_after"`
}

// ParseBundle parses a PEM bundle of one or more CERTIFICATE blocks. Any other
// block, trailing garbage or an unparsable certificate is an error.
func ParseBundle(pemBytes []byte) (*Bundle, error) {
	b := &Bundle{PEM: slices.Clone(pemBytes), Pool: x509.NewCertPool()}
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("trust bundle: PEM block %q: want CERTIFICATE", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trust bundle: certificate %d: %w", len(b.Roots), err)
		}
		sum := sha256.Sum256(cert.Raw)
		b.Pool.AddCert(cert)
		b.Roots = append(b.Roots, Root{Subject: cert.Subject.String(), SHA256: hex.EncodeToString(sum[:]), NotAfter: cert.NotAfter})
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("trust bundle: data after the last PEM certificate")
	}
	if len(b.Roots) == 0 {
		return nil, errors.New("trust bundle: no PEM certificate")
	}
	return b, nil
}

// SPIFFEID is the SPIFFE ID of cert by the one rule of api/spiffeid (exactly
// one URI SAN, a meshgate SPIFFE ID), "" when it has none.
func SPIFFEID(cert *x509.Certificate) string {
	id, err := spiffeid.FromCertificate(cert)
	if err != nil {
		return ""
	}
	return id.String()
}

// VerifyPeer checks a peer's chain (leaf first, as presented) against bundle
// at now, that the leaf has an identity by the one rule of api/spiffeid
// (exactly one URI SAN, a meshgate SPIFFE ID: a certificate with several URI
// SANs is refused) and, when allowedURIs is not empty, that this identity is
// one of them. It returns the leaf's SPIFFE ID. A nil bundle fails: nothing
// is trusted before the trust bundle arrived.
func VerifyPeer(chain []*x509.Certificate, bundle *Bundle, allowedURIs []string, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	if bundle == nil {
		return "", errors.New("no trust bundle received yet")
	}
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         bundle.Pool,
		Intermediates: intermediates,
		CurrentTime:   now,
		// SVIDs serve as client and server certificates alike.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return "", fmt.Errorf("peer certificate: %w", err)
	}
	parsed, err := spiffeid.FromCertificate(leaf)
	if err != nil {
		return "", fmt.Errorf("peer certificate: %w", err)
	}
	id := parsed.String()
	if len(allowedURIs) == 0 || slices.Contains(allowedURIs, id) {
		return id, nil
	}
	return "", fmt.Errorf("peer identity %q is not the expected %q", id, strings.Join(allowedURIs, `" or "`))
}
