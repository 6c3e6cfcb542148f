package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// AnnotationDevHTTPSPort on a Gateway asks `meshgate dev` to add an HTTPS
// listener on that port, with a self-signed certificate for localhost,
// 127.0.0.1 and ::1 that dev generates on its first run (and reuses).
// Outside dev the annotation does nothing.
const AnnotationDevHTTPSPort = "meshgate.dev/dev-https-port"

// Files of the dev certificate in dev's state directory.
const (
	devCertFile = "dev-tls.crt"
	devKeyFile  = "dev-tls.key"
	// devTLSSecret names the dev certificate as a Secret of the Gateway's
	// namespace.
	devTLSSecret = "meshgate-dev-tls"
	// devCertValidity is how long a generated certificate is valid;
	// devCertRenewBefore how long before its expiry dev makes a new one.
	devCertValidity    = 365 * 24 * time.Hour
	devCertRenewBefore = 7 * 24 * time.Hour
)

// devCertificate is dev's self-signed certificate: its files and content.
type devCertificate struct {
	certFile string
	cert     *policy.TLSCertificate
}

// defaultDevStateDir is where dev keeps its certificate: the user's
// configuration directory (~/.config/meshgate/dev), else a directory of
// the system's temporary one.
func defaultDevStateDir() string {
	if dir, err := os.UserConfigDir(); err == nil {
		return filepath.Join(dir, "meshgate", "dev")
	}
	return filepath.Join(os.TempDir(), "meshgate-dev")
}

// ensureDevCertificate returns the certificate in dir, generating it (and
// dir) when it is missing, unreadable or expires within
// devCertRenewBefore of now: the first run makes it, later runs reuse it,
// so a client told to trust it keeps trusting it.
func ensureDevCertificate(dir string, now time.Time) (*devCertificate, error) {
	certPath, keyPath := filepath.Join(dir, devCertFile), filepath.Join(dir, devKeyFile)
	certPEM, errCert := os.ReadFile(certPath)
	keyPEM, errKey := os.ReadFile(keyPath)
	if errCert == nil && errKey == nil {
		if c, err := policy.ParseCertificate(certPEM, keyPEM, now); err == nil && c.NotAfter.Sub(now) > devCertRenewBefore {
			return &devCertificate{certFile: certPath, cert: c}, nil
		}
	}
	certPEM, keyPEM, err := generateDevCertificate(now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev certificate: %w", err)
	}
	// The key first, each file written whole then renamed into place.
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{keyPath, keyPEM, 0o600}, {certPath, certPEM, 0o644}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("dev certificate: %w", err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			return nil, fmt.Errorf("dev certificate: %w", err)
		}
	}
	c, err := policy.ParseCertificate(certPEM, keyPEM, now)
	if err != nil {
		return nil, fmt.Errorf("dev certificate: %w", err)
	}
	return &devCertificate{certFile: certPath, cert: c}, nil
}

// generateDevCertificate makes a self-signed ECDSA P-256 certificate for
// localhost, 127.0.0.1 and ::1, its own CA (curl --cacert trusts it).
func generateDevCertificate(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "meshgate dev (localhost)", Organization: []string{"meshgate dev"}},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(devCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Self-signed and its own trust anchor.
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// withDevHTTPS returns evaluate with the HTTPS listeners of dev added
// (devHTTPS), as withTracing adds tracing.
func withDevHTTPS(evaluate func(policy.Input) *policy.Result, c *devCertificate) func(policy.Input) *policy.Result {
	return func(in policy.Input) *policy.Result {
		r := evaluate(in)
		if r == nil || r.Set == nil {
			return r
		}
		out := *r
		out.Set = devHTTPS(r.Set, c)
		return &out
	}
}

// devHTTPS returns set with, on every Gateway annotated with
// AnnotationDevHTTPSPort, an HTTPS listener "https" on that port (no
// hostname) presenting c. The set and its Gateways are copied, not
// modified (a policy cache shares them). A bad port leaves the Gateway as
// it is; dev reports it (devHTTPSPorts).
func devHTTPS(set *policy.Set, c *devCertificate) *policy.Set {
	var gateways []*policy.Gateway
	for i, g := range set.Gateways {
		port, err := devHTTPSPort(g)
		if err != nil || port == 0 {
			continue
		}
		if gateways == nil {
			gateways = slices.Clone(set.Gateways)
		}
		copied := *g
		copied.Spec.Listeners = append(slices.Clone(g.Spec.Listeners), gwapiv1.Listener{
			Name:     gwapiv1.SectionName(devListenerName(g)),
			Protocol: gwapiv1.HTTPSProtocolType,
			Port:     gwapiv1.PortNumber(port),
			TLS: &gwapiv1.ListenerTLSConfig{
				CertificateRefs: []gwapiv1.SecretObjectReference{{Name: devTLSSecret}},
			},
		})
		gateways[i] = &copied
	}
	if gateways == nil {
		return set
	}
	out := *set
	out.Gateways = gateways
	out.TLSCertificates = make(map[string]*policy.TLSCertificate, len(set.TLSCertificates)+len(gateways))
	for k, v := range set.TLSCertificates {
		out.TLSCertificates[k] = v
	}
	for _, g := range gateways {
		ns := g.Namespace
		if ns == "" {
			ns = policy.DefaultNamespace
		}
		out.TLSCertificates[ns+"/"+devTLSSecret] = c.cert
	}
	return &out
}

// devHTTPSPort is the port of a Gateway's AnnotationDevHTTPSPort, 0
// without one.
func devHTTPSPort(g *policy.Gateway) (int, error) {
	v, ok := g.Annotations[AnnotationDevHTTPSPort]
	if !ok {
		return 0, nil
	}
	port, err := strconv.Atoi(v)
	switch {
	case err != nil || port < 1 || port > 65535:
		return 0, fmt.Errorf("gateway %s: annotation %s: %q is not a port (1-65535)", g.Name, AnnotationDevHTTPSPort, v)
	case slices.ContainsFunc(g.Spec.Listeners, func(l gwapiv1.Listener) bool { return int(l.Port) == port }):
		return 0, fmt.Errorf("gateway %s: annotation %s: port %d is a listener's already", g.Name, AnnotationDevHTTPSPort, port)
	}
	return port, nil
}

// devHTTPSPorts checks the annotations of the set's Gateways.
func devHTTPSPorts(set *policy.Set) error {
	var errs []error
	for _, g := range set.Gateways {
		if _, err := devHTTPSPort(g); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// devListenerName is "https", or "dev-https" when the Gateway has an
// "https" listener.
func devListenerName(g *policy.Gateway) string {
	if slices.ContainsFunc(g.Spec.Listeners, func(l gwapiv1.Listener) bool { return l.Name == "https" }) {
		return "dev-https"
	}
	return "https"
}

// printDevHTTPS prints how to call the gateways' dev HTTPS listeners:
// curl trusting dev's certificate.
func printDevHTTPS(out io.Writer, c *devCertificate, urls []string) {
	if c == nil {
		return
	}
	for _, u := range urls {
		if strings.HasPrefix(u, "https://") {
			fmt.Fprintf(out, "HTTPS (self-signed for localhost, 127.0.0.1 and ::1; made once, kept in %s):\n  curl --cacert %s %s/\n\n", filepath.Dir(c.certFile), c.certFile, u)
		}
	}
}
