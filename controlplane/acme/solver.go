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

// Present implements acmez.Solver.
func (s *solver) Present(_ context.Context, chal acme.Challenge) error {
	m := s.m
	switch chal.Type {
	case acme.ChallengeTypeHTTP01:
		m.mu.Lock()
		m.httpChallenges[chal.Token] = model.HTTPChallenge{Hostname: chal.Identifier.Value, Token: chal.Token, KeyAuthorization: chal.KeyAuthorization}
		m.changed()
		m.mu.Unlock()
	case acme.ChallengeTypeTLSALPN01:
		cert, err := tlsALPNCertificate(chal)
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.alpnChallenges[chal.Identifier.Value] = model.TLSALPNChallenge{Hostname: chal.Identifier.Value, Certificate: cert}
		m.changed()
		m.mu.Unlock()
	default:
		return fmt.Errorf("challenge type %s is not answered by meshgate's gateways", chal.Type)
	}
	m.logger.Info("ACME: answering a challenge", "type", chal.Type, "hostname", chal.Identifier.Value)
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
func (s *solver) CleanUp(_ context.Context, chal acme.Challenge) error {
	m := s.m
	m.mu.Lock()
	if chal.Type == acme.ChallengeTypeTLSALPN01 {
		delete(m.alpnChallenges, chal.Identifier.Value)
	} else {
		delete(m.httpChallenges, chal.Token)
	}
	m.changed()
	m.mu.Unlock()
	m.opts.OnChange()
	return nil
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
