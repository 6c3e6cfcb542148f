package identity

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
)

// ErrUntrustedControlPlane is returned (wrapped) when the control plane's
// certificate does not chain to the trust bundle or the join token's pin, or
// does not carry the control plane's SPIFFE ID.
var ErrUntrustedControlPlane = errors.New("control plane not trusted")

// verifyControlPlane checks the certificate chain a control plane presented
// (leaf first): it must chain to roots, or, when roots is nil, to the
// certificate of the chain whose SHA-256 pin is pin; and the leaf's SPIFFE ID
// must be wantID.
func verifyControlPlane(chain []*x509.Certificate, roots *x509.CertPool, pin string, wantID spiffeid.ID) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: it presented no certificate", ErrUntrustedControlPlane)
	}
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	verifyOpts := x509.VerifyOptions{
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	switch {
	case roots != nil:
		verifyOpts.Roots = roots
		if _, err := leaf.Verify(verifyOpts); err != nil {
			return fmt.Errorf("%w: its certificate does not chain to the trust bundle: %w", ErrUntrustedControlPlane, err)
		}
	case pin != "":
		var pinned *x509.Certificate
		for _, c := range chain {
			if token.PinOf(c.Raw) == pin {
				pinned = c
				break
			}
		}
		if pinned == nil {
			return fmt.Errorf("%w: no certificate in its chain matches the join token's root pin %s…: "+
				"the token was issued by another control plane or CA (or the control plane does not send its root)",
				ErrUntrustedControlPlane, pin[:min(len(pin), 16)])
		}
		verifyOpts.Roots = x509.NewCertPool()
		verifyOpts.Roots.AddCert(pinned)
		if _, err := leaf.Verify(verifyOpts); err != nil {
			return fmt.Errorf("%w: its certificate does not chain to the pinned root: %w", ErrUntrustedControlPlane, err)
		}
	default:
		return fmt.Errorf("%w: no trust bundle and no join token pin to verify it with", ErrUntrustedControlPlane)
	}
	got, err := spiffeid.FromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUntrustedControlPlane, err)
	}
	if got != wantID {
		if td, want := got.TrustDomain, wantID.TrustDomain; td != want && got == spiffeid.ControlPlane(td) {
			return fmt.Errorf("%w: it is in trust domain %q but this proxy uses %q (set --trust-domain %s)",
				ErrUntrustedControlPlane, td, want, td)
		}
		return fmt.Errorf("%w: it presented identity %s, want %s", ErrUntrustedControlPlane, got, wantID)
	}
	return nil
}
