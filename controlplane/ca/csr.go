package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/meshgate/meshgate/api/spiffeid"
)

// MaxCSRSize bounds the PEM of a CSR.
const MaxCSRSize = 16 << 10

// ValidateCSR parses a PEM PKCS#10 CSR and checks everything the CA
// requires: a valid self-signature, an ECDSA P-256 key, exactly one URI SAN
// that is a SPIFFE ID in trustDomain, and no other SAN. It returns the CSR
// and its ID; its errors say what is wrong.
func ValidateCSR(csrPEM []byte, trustDomain string) (*x509.CertificateRequest, spiffeid.ID, error) {
	if len(csrPEM) == 0 {
		return nil, spiffeid.ID{}, errors.New("empty CSR")
	}
	if len(csrPEM) > MaxCSRSize {
		return nil, spiffeid.ID{}, fmt.Errorf("CSR is %d bytes, more than the %d allowed", len(csrPEM), MaxCSRSize)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, spiffeid.ID{}, errors.New("CSR is not PEM")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, spiffeid.ID{}, fmt.Errorf("PEM block is %q, want CERTIFICATE REQUEST", truncate(block.Type))
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, spiffeid.ID{}, errors.New("data after the CSR's PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("CSR does not parse as PKCS#10: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("CSR signature is invalid: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, spiffeid.ID{}, errors.New("CSR key must be ECDSA P-256")
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n != 0 {
		return nil, spiffeid.ID{}, fmt.Errorf("CSR has %d DNS, IP or email SANs; only the SPIFFE ID is allowed", n)
	}
	id, err := spiffeid.FromCSR(csr)
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	if id.TrustDomain != trustDomain {
		return nil, spiffeid.ID{}, fmt.Errorf("SPIFFE ID %s is not in the trust domain %q", id, trustDomain)
	}
	return csr, id, nil
}

// truncate bounds what untrusted input puts in an error message.
func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
