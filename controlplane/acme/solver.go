package acme

import (
	"context"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/meshgate/meshgate/controlplane/model"
)

// challengeReadyTimeout bounds the wait for the gateways to serve a
// challenge before the CA is asked to validate it.
const challengeReadyTimeout = 30 * time.Second

// solver answers the CA's challenges through the gateways: Present adds
// the challenge to the Manager's material (the control plane pushes it),
// Wait returns once the gateways serve it, CleanUp removes it.
type solver struct {
	m *Manager
}

var (
	_ acmez.Solver = (*solver)(nil)
	_ acmez.Waiter = (*solver)(nil)
)

// Present implements acmez.Solver: the challenge is stored, where every
// replica sharing the state reads it, and served.
func (s *solver) Present(ctx context.Context, chal acme.Challenge) error {
	m := s.m
	sc := sharedChallenge{Type: chal.Type, Hostname: chal.Identifier.Value, Token: chal.Token, Expires: time.Now().Add(challengeLifetime)}
	switch chal.Type {
	case acme.ChallengeTypeHTTP01:
		sc.KeyAuthorization = chal.KeyAuthorization
	case acme.ChallengeTypeTLSALPN01:
		cert, err := tlsALPNCertificate(chal)
		if err != nil {
			return err
		}
		sc.CertPEM, sc.KeyPEM = cert.CertPEM, cert.KeyPEM
	default:
		return fmt.Errorf("challenge type %s is not answered by meshgate's gateways", chal.Type)
	}
	if err := m.storeChallenge(ctx, sc); err != nil {
		return err
	}
	m.logger.Info("ACME: answering a challenge", "type", chal.Type, "hostname", chal.Identifier.Value)
	m.mu.Lock()
	m.local[sc.key()] = sc
	m.changed()
	m.mu.Unlock()
	m.opts.OnChange()
	return nil
}

// Wait implements acmez.Waiter: it returns once the gateways serve what
// Present added.
func (s *solver) Wait(ctx context.Context, _ acme.Challenge) error {
	m := s.m
	m.mu.Lock()
	gen := m.generation
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, challengeReadyTimeout)
	defer cancel()
	return m.waitApplied(ctx, gen)
}

// CleanUp implements acmez.Solver.
func (s *solver) CleanUp(ctx context.Context, chal acme.Challenge) error {
	m := s.m
	sc := sharedChallenge{Type: chal.Type, Hostname: chal.Identifier.Value, Token: chal.Token}
	m.mu.Lock()
	delete(m.local, sc.key())
	m.changed()
	m.mu.Unlock()
	m.opts.OnChange()
	return m.storage.Delete(ctx, challengesDir+"/"+sc.key()+".json")
}

// tlsALPNCertificate is the TLS-ALPN-01 challenge certificate of chal
// (RFC 8737: self-signed, with the acmeIdentifier extension), as the
// listener certificate the gateways present to "acme-tls/1" handshakes.
func tlsALPNCertificate(chal acme.Challenge) (*model.Certificate, error) {
	c, err := acmez.TLSALPN01ChallengeCert(chal)
	if err != nil {
		return nil, fmt.Errorf("tls-alpn-01 challenge certificate: %w", err)
	}
	keyPEM, err := certmagic.PEMEncodePrivateKey(c.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("tls-alpn-01 challenge key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	cert := model.NewACMECertificate(chal.Identifier.Value, certPEM, keyPEM)
	cert.Secret = model.ACMEChallengeSecret(chal.Identifier.Value)
	return cert, nil
}
