// Package meshtlstest provides test certificate authorities issuing SPIFFE
// certificates (SVIDs) and a fake identity provider, for tests of the mesh
// mTLS paths. It is meant for _test.go files only.
package meshtlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a self-signed test root.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is the root certificate, as a trust bundle carries it.
	PEM []byte
}

// NewCA creates a root certificate authority named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"meshgate test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Issue returns a leaf certificate for spiffeID (its only URI SAN), signed by
// ca, with its key, usable as client and server certificate, valid from an
// hour ago for two hours.
func (ca *CA) Issue(t testing.TB, spiffeID string) *tls.Certificate {
	t.Helper()
	return ca.IssueValid(t, spiffeID, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// IssueValid is Issue with the given validity.
func (ca *CA) IssueValid(t testing.TB, spiffeID string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	return ca.issue(t, []string{spiffeID}, notBefore, notAfter)
}

// IssueURIs is Issue with any URI SANs, none or several: certificates the
// mesh CA never issues, for the tests of their refusal.
func (ca *CA) IssueURIs(t testing.TB, uris ...string) *tls.Certificate {
	t.Helper()
	return ca.issue(t, uris, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func (ca *CA) issue(t testing.TB, uris []string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	var sans []*url.URL
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		sans = append(sans, u)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         sans,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Identity is a fake identity.Provider: a fixed SPIFFE ID, a certificate the
// test can replace, and a record of the trust bundles delivered to it.
type Identity struct {
	id   string
	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex
	bundles [][]byte
}

// NewIdentity returns a provider for id serving cert (which may be nil).
func NewIdentity(id string, cert *tls.Certificate) *Identity {
	i := &Identity{id: id}
	i.cert.Store(cert)
	return i
}

// SPIFFEID implements identity.Provider.
func (i *Identity) SPIFFEID() string { return i.id }

// Certificate implements identity.Provider.
func (i *Identity) Certificate() *tls.Certificate { return i.cert.Load() }

// SetCertificate replaces the certificate (a rotation).
func (i *Identity) SetCertificate(cert *tls.Certificate) { i.cert.Store(cert) }

// UpdateTrustBundle implements identity.Provider and records pemBundle.
func (i *Identity) UpdateTrustBundle(pemBundle []byte) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.bundles = append(i.bundles, slices.Clone(pemBundle))
}

// TrustBundles returns the bundles delivered so far, oldest first.
func (i *Identity) TrustBundles() [][]byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.bundles)
}
