package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
)

// Settings returns the mesh settings the CA signs with: the trust domain and
// the certificate lifetime. They come from the current model.
type Settings func() (trustDomain string, certTTL time.Duration)

// ServingCert is the control plane's own TLS certificate (sent with every
// root of the trust bundle after it, so a token's pin can be checked), for
// its SPIFFE ID
// spiffe://<td>/ns/meshgate-system/svc/controlplane with the IP SANs of the
// address it listens on (plus 127.0.0.1, ::1) and DNS localhost. It is
// re-issued, on the next handshake, once half its lifetime (counted from
// issue, not from the back-dated NotBefore) has passed, when
// the signing root changed, or when the trust domain changed.
type ServingCert struct {
	ca       *CA
	settings Settings
	ips      []net.IP

	mu  sync.Mutex // serialises re-issue
	cur atomic.Pointer[servingEntry]
}

type servingEntry struct {
	cert    *tls.Certificate
	renewAt time.Time
	id      spiffeid.ID
	signer  *root
}

// NewServingCert returns the serving certificate source for a server
// listening on addr (nil: loopback only). An unspecified address (0.0.0.0,
// ::) adds every interface address.
func NewServingCert(c *CA, settings Settings, addr net.Addr) *ServingCert {
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	add := func(ip net.IP) {
		for _, have := range ips {
			if have.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP != nil {
		if tcp.IP.IsUnspecified() {
			if addrs, err := net.InterfaceAddrs(); err == nil {
				for _, a := range addrs {
					if n, ok := a.(*net.IPNet); ok {
						add(n.IP)
					}
				}
			}
		} else {
			add(tcp.IP)
		}
	}
	return &ServingCert{ca: c, settings: settings, ips: ips}
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Certificate()
}

// Certificate returns the current serving certificate, issuing a new one
// when due.
func (s *ServingCert) Certificate() (*tls.Certificate, error) {
	td, ttl := s.settings()
	if e := s.cur.Load(); s.fresh(e, td) {
		return e.cert, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.cur.Load(); s.fresh(e, td) {
		return e.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	issuedAt := s.ca.now()
	id := spiffeid.ControlPlane(td)
	v := s.ca.cur.Load()
	signer := v.signer
	issued, err := s.ca.issue(&key.PublicKey, id, ttl, s.ips, []string{"localhost"}, pkix.Name{})
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	// The chain carries every root of the bundle, the signer's first: a
	// proxy enrolling with a join token has no roots yet and checks the
	// token's pin against them (through a rotation, until finish).
	chain := slices.Clone(issued.ChainDER)
	for _, r := range append([]*root{signer}, v.roots...) {
		if !slices.ContainsFunc(chain, func(der []byte) bool { return bytes.Equal(der, r.cert.Raw) }) {
			chain = append(chain, r.cert.Raw)
		}
	}
	cert := &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: issued.Leaf}
	// Half of the lifetime from issue: NotBefore is back-dated by ClockSkew,
	// and counting from it would make a one-minute certificate due at once
	// (re-issued on every handshake).
	life := issued.Leaf.NotAfter.Sub(issuedAt)
	s.cur.Store(&servingEntry{cert: cert, renewAt: issuedAt.Add(life / 2), id: id, signer: signer})
	s.ca.logger.Info("issued the control plane's serving certificate", "spiffeID", id.String(), "notAfter", issued.Leaf.NotAfter)
	return cert, nil
}

func (s *ServingCert) fresh(e *servingEntry, td string) bool {
	return e != nil && e.id.TrustDomain == td && e.signer == s.ca.cur.Load().signer && s.ca.now().Before(e.renewAt)
}

// ServerTLSConfig is the TLS configuration of the port that serves xDS and
// the CA: the serving certificate, and client certificates verified, when
// given, against the trust bundle current at each handshake (so a rotation
// applies to the next connection). Whether a client certificate is required
// is up to each service.
func (c *CA) ServerTLSConfig(serving *ServingCert) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2"},
			GetCertificate: serving.GetCertificate,
			ClientAuth:     tls.VerifyClientCertIfGiven,
			ClientCAs:      c.Pool(),
		}, nil
	}
	return base
}
