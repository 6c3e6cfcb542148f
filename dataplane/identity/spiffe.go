package identity

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshgate/meshgate/api/dnslabel"
)

// DefaultTrustDomain is the trust domain of a mesh without a MeshConfig.
const DefaultTrustDomain = "meshgate.local"

// ControlPlaneNamespace and ControlPlaneService name the control plane's own
// identity, spiffe://<trust-domain>/ns/meshgate-system/svc/controlplane.
const (
	ControlPlaneNamespace = "meshgate-system"
	ControlPlaneService   = "controlplane"
)

// SPIFFEID returns spiffe://<trustDomain>/ns/<namespace>/svc/<service>
// after checking each part.
func SPIFFEID(trustDomain, namespace, service string) (string, error) {
	if err := checkTrustDomain(trustDomain); err != nil {
		return "", err
	}
	if err := dnslabel.CheckName("namespace", namespace); err != nil {
		return "", err
	}
	if err := dnslabel.CheckName("service", service); err != nil {
		return "", err
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/svc/" + service, nil
}

// ControlPlaneID is the SPIFFE ID the control plane must present.
func ControlPlaneID(trustDomain string) string {
	return "spiffe://" + trustDomain + "/ns/" + ControlPlaneNamespace + "/svc/" + ControlPlaneService
}

// checkTrustDomain checks a SPIFFE trust domain name: lowercase letters,
// digits, '.', '-' and '_'.
func checkTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("trust domain is required")
	}
	if len(td) > 255 || strings.Trim(td, "abcdefghijklmnopqrstuvwxyz0123456789.-_") != "" {
		return fmt.Errorf("trust domain %q: want lowercase letters, digits, '.', '-' and '_'", td)
	}
	return nil
}

// certificateID returns the one URI SAN of cert, or an error when it has
// none or several.
func certificateID(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(cert.URIs))
	}
	return cert.URIs[0].String(), nil
}

// trustDomainOf returns the trust domain of a SPIFFE ID, "" when id is not one.
func trustDomainOf(id string) string {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" {
		return ""
	}
	return u.Host
}
