// Package spiffeid is meshgate's SPIFFE ID contract, shared by the CA that
// issues X.509-SVIDs, the proxies that request, present and verify them, and
// the policy model that names identities:
//
//	spiffe://<trust-domain>/ns/<namespace>/svc/<service>
//
// The trust domain is 1 to 255 lowercase letters, digits, '.', '-' and '_'
// (the SPIFFE ID specification's characters); namespace and service are DNS
// labels (api/dnslabel). Nothing else is allowed: no port, user, query,
// fragment, percent-encoding or other path, so that an ID has one spelling
// and string comparison is identity comparison.
//
// A certificate (or CSR) names its identity by one rule, the X.509-SVID
// specification's: it carries exactly one URI SAN, and that URI is the SPIFFE
// ID. A certificate with no URI SAN, with several (even if one of them is a
// SPIFFE ID), or whose URI SAN is not a meshgate SPIFFE ID has no identity
// and is refused wherever an identity is checked: by the CA, by a proxy
// verifying the control plane or its own certificate, and by mesh mTLS.
package spiffeid

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshgate/meshgate/api/dnslabel"
)

const (
	// Scheme is the URI scheme of SPIFFE IDs.
	Scheme = "spiffe"
	// DefaultTrustDomain is the trust domain of a mesh without a MeshConfig.
	DefaultTrustDomain = "meshgate.local"
	// ControlPlaneNamespace and ControlPlaneService name the control plane's
	// own identity; the namespace is reserved for it.
	ControlPlaneNamespace = "meshgate-system"
	ControlPlaneService   = "controlplane"
	// MaxTrustDomainLength bounds a trust domain name.
	MaxTrustDomainLength = 255
)

// ID is a meshgate SPIFFE ID. The zero ID is no identity.
type ID struct {
	TrustDomain string
	Namespace   string
	Service     string
}

// New checks each part and returns the ID.
func New(trustDomain, namespace, service string) (ID, error) {
	if err := CheckTrustDomain(trustDomain); err != nil {
		return ID{}, err
	}
	if err := dnslabel.CheckName("namespace", namespace); err != nil {
		return ID{}, err
	}
	if err := dnslabel.CheckName("service", service); err != nil {
		return ID{}, err
	}
	return ID{TrustDomain: trustDomain, Namespace: namespace, Service: service}, nil
}

// ControlPlane is the control plane's identity in trustDomain.
func ControlPlane(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: ControlPlaneNamespace, Service: ControlPlaneService}
}

// String formats the ID; "" for the zero ID.
func (id ID) String() string {
	if id == (ID{}) {
		return ""
	}
	return Of(id.TrustDomain, id.Namespace, id.Service)
}

// URL is the ID as a URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: Scheme, Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/svc/" + id.Service}
}

// Of formats the ID of namespace/service in trustDomain without checking the
// parts: for names that were checked already (a compiled policy model).
func Of(trustDomain, namespace, service string) string {
	return NamespacePrefix(trustDomain, namespace) + "svc/" + service
}

// TrustDomainPrefix is how every ID of trustDomain starts:
// "spiffe://<trust-domain>/".
func TrustDomainPrefix(trustDomain string) string {
	return Scheme + "://" + trustDomain + "/"
}

// NamespacePrefix is how every ID of a namespace starts:
// "spiffe://<trust-domain>/ns/<namespace>/".
func NamespacePrefix(trustDomain, namespace string) string {
	return TrustDomainPrefix(trustDomain) + "ns/" + namespace + "/"
}

// Parse parses a meshgate SPIFFE ID strictly (see the package doc).
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return ID{}, fmt.Errorf("SPIFFE ID %q: must start with spiffe://", truncate(s))
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("SPIFFE ID %q: no path", truncate(s))
	}
	if err := CheckTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", truncate(s), err)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "svc" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: path must be /ns/<namespace>/svc/<service>", truncate(s))
	}
	id := ID{TrustDomain: td, Namespace: parts[1], Service: parts[3]}
	if !dnslabel.Valid(id.Namespace) || !dnslabel.Valid(id.Service) {
		return ID{}, fmt.Errorf("SPIFFE ID %q: namespace and service must be DNS labels", truncate(s))
	}
	return id, nil
}

// FromURL parses a URI SAN: a meshgate SPIFFE ID, spelled canonically.
func FromURL(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, errors.New("empty URI")
	}
	s := u.String()
	id, err := Parse(s)
	if err != nil {
		return ID{}, err
	}
	if id.String() != s {
		return ID{}, fmt.Errorf("SPIFFE ID %q: not in canonical form", truncate(s))
	}
	return id, nil
}

// FromCertificate is the identity of cert by the one rule of the package
// doc: exactly one URI SAN, a meshgate SPIFFE ID.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	return fromURIs("certificate", cert.URIs)
}

// FromCSR is the identity a CSR asks for, by the same rule.
func FromCSR(csr *x509.CertificateRequest) (ID, error) {
	return fromURIs("CSR", csr.URIs)
}

func fromURIs(what string, uris []*url.URL) (ID, error) {
	if len(uris) != 1 {
		return ID{}, fmt.Errorf("%s has %d URI SANs, want exactly one SPIFFE ID", what, len(uris))
	}
	return FromURL(uris[0])
}

// CheckTrustDomain accepts a trust domain name: 1 to 255 lowercase letters,
// digits, '-', '.' and '_'.
func CheckTrustDomain(td string) error {
	if td == "" || len(td) > MaxTrustDomainLength {
		return errors.New("trust domain must be 1 to 255 characters")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("trust domain %q: character %q not allowed (lowercase letters, digits, '-', '.', '_')", truncate(td), c)
		}
	}
	return nil
}

// truncate bounds what untrusted input puts in an error message.
func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
