package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

// fakeCA signs CSRs in process, with a NotBefore back-dated by a minute as
// the control plane's CA does, and records every attempt. fail, when set,
// decides the answer of attempt n (0 is Start's) instead.
type fakeCA struct {
	ca   *identitytest.CA
	ttl  time.Duration
	fail func(n int) error

	mu       sync.Mutex
	attempts []signAttempt
}

type signAttempt struct {
	at        time.Time
	withToken bool
	ok        bool
}

func newFakeCA(t *testing.T, ttl time.Duration) *fakeCA {
	ca := identitytest.NewCA(t, spiffeid.DefaultTrustDomain)
	ca.Backdate = time.Minute
	return &fakeCA{ca: ca, ttl: ttl}
}

func (f *fakeCA) sign(_ context.Context, _ string, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	f.mu.Lock()
	n := len(f.attempts)
	f.attempts = append(f.attempts, signAttempt{at: time.Now(), withToken: req.GetToken() != ""})
	f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(n); err != nil {
			return nil, err
		}
	}
	block, _ := pem.Decode(req.GetCsrPem())
	if block == nil {
		return nil, errors.New("no CSR")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	leaf, err := f.ca.Issue(csr.URIs[0].String(), csr.PublicKey, f.ttl)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.attempts[n].ok = true
	f.mu.Unlock()
	return &cav1.SignResponse{
		CertChainPem:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		TrustBundlePem: f.ca.RootPEM,
		SpiffeId:       csr.URIs[0].String(),
	}, nil
}

func (f *fakeCA) recorded() []signAttempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]signAttempt(nil), f.attempts...)
}

// TestRenewalTiming runs the renewal loop for ten virtual minutes against a
// CA issuing one-minute certificates back-dated by a minute: renewals come
// at half of the lifetime as received (27-33 s apart with the jitter), a
// failing CA is retried no faster than the floor, and a refusal stops
// renewal for good.
func TestRenewalTiming(t *testing.T) {
	t.Parallel()
	const (
		ttl    = time.Minute
		window = 10 * time.Minute
	)
	unavailable := status.Error(codes.Unavailable, "control plane down")
	tests := []struct {
		name  string
		fail  func(n int) error
		check func(t *testing.T, attempts []signAttempt)
	}{
		{
			name: "renews at half the lifetime as received",
			check: func(t *testing.T, attempts []signAttempt) {
				renewals := len(attempts) - 1
				// 600 s at one renewal per 27-33 s.
				if renewals < 18 || renewals > 23 {
					t.Errorf("%d renewals in %s, want about %d (one per half lifetime)", renewals, window, window/(ttl/2))
				}
				for i := 1; i < len(attempts); i++ {
					// Certificate times have one-second granularity: NotAfter
					// may be up to a second short of the TTL.
					gap := attempts[i].at.Sub(attempts[i-1].at)
					if gap < ttl/2*9/10-time.Second || gap > ttl/2*11/10 {
						t.Errorf("renewal %d came %s after the previous one, want %s ±10%%", i, gap, ttl/2)
					}
					if !attempts[i].ok || attempts[i].withToken {
						t.Errorf("renewal %d: ok %t, with token %t; want a certificate-authenticated success", i, attempts[i].ok, attempts[i].withToken)
					}
				}
			},
		},
		{
			name: "a failing CA is retried no faster than the floor",
			fail: func(n int) error {
				if n == 0 {
					return nil
				}
				return unavailable
			},
			check: func(t *testing.T, attempts []signAttempt) {
				if len(attempts) < 3 {
					t.Fatalf("%d attempts: the renewal was not retried", len(attempts))
				}
				if first := attempts[1].at.Sub(attempts[0].at); first < ttl/2*9/10-time.Second {
					t.Errorf("first renewal attempt %s after issue, before half the lifetime", first)
				}
				for i := 2; i < len(attempts); i++ {
					if gap := attempts[i].at.Sub(attempts[i-1].at); gap < minRenewInterval {
						t.Errorf("attempt %d came %s after the previous one, under the %s floor", i, gap, minRenewInterval)
					}
				}
				// Backoff at most 50 ms in this test: the floor sets the pace.
				if max := int(window/minRenewInterval) + 1; len(attempts) > max {
					t.Errorf("%d attempts in %s, more than one per %s", len(attempts), window, minRenewInterval)
				}
				last := attempts[len(attempts)-1]
				if !last.withToken {
					t.Error("after the certificate expired, attempts did not present the join token")
				}
			},
		},
		{
			name: "a refusal stops renewal",
			fail: func(n int) error {
				if n == 0 {
					return nil
				}
				return status.Error(codes.PermissionDenied, "the join token of this enrolment was revoked")
			},
			check: func(t *testing.T, attempts []signAttempt) {
				if len(attempts) != 2 {
					t.Errorf("%d attempts after a refusal, want Start's and the refused renewal only", len(attempts))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := newFakeCA(t, ttl)
				f.fail = tt.fail
				m := newTestManager(t, "ca.invalid:15010", f.ca.Token(t), nil)
				// The hook's errors are classified, as signGRPC's are.
				m.sign = func(ctx context.Context, addr string, req *cav1.SignRequest) (*cav1.SignResponse, error) {
					resp, err := f.sign(ctx, addr, req)
					if err != nil {
						return nil, m.classify(err)
					}
					return resp, nil
				}
				ctx, cancel := context.WithCancel(t.Context())
				if err := m.Start(ctx); err != nil {
					t.Fatalf("Start: %v", err)
				}
				done := make(chan error, 1)
				go func() { done <- m.Run(ctx) }()
				time.Sleep(window)
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run: %v", err)
				}
				tt.check(t, f.recorded())
			})
		})
	}
}

// TestOnCertificateFollowsRenewals: the OnCertificate hook sees the first
// certificate and every renewal, each with the trust bundle the CA sent,
// in the order installed (virtual time: two and a half minutes of
// one-minute certificates, renewed every 27-33 s).
func TestOnCertificateFollowsRenewals(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCA(t, time.Minute)
		var (
			mu    sync.Mutex
			seen  []*tls.Certificate
			empty int
		)
		m := newTestManager(t, "ca.invalid:15010", f.ca.Token(t), func(o *ManagerOptions) {
			o.OnCertificate = func(cert *tls.Certificate, bundle []byte) {
				mu.Lock()
				defer mu.Unlock()
				seen = append(seen, cert)
				if len(bundle) == 0 {
					empty++
				}
			}
		})
		m.sign = f.sign
		ctx, cancel := context.WithCancel(t.Context())
		if err := m.Start(ctx); err != nil {
			t.Fatalf("Start: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		time.Sleep(150 * time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		attempts := f.recorded()
		if len(seen) != len(attempts) || len(seen) < 5 || empty != 0 {
			t.Fatalf("hook saw %d certificates (%d without a bundle) for %d issued, want every one with its bundle", len(seen), empty, len(attempts))
		}
		if seen[len(seen)-1] != m.Certificate() {
			t.Error("the hook's last certificate is not the one in use")
		}
	})
}
