package acme

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/meshgate/meshgate/controlplane/state"
)

// TestSolverWaitsForTheGateways: a challenge presented is in the material
// at once (and a reload asked for); Wait returns only once the control
// plane says the gateways were given that material, and fails after
// challengeReadyTimeout if they never are; CleanUp removes it.
func TestSolverWaitsForTheGateways(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var reloads atomic.Int32
		m := New(t.Context(), Options{Store: state.NewMemory(), OnChange: func() { reloads.Add(1) }})
		s := &solver{m: m}
		chal := acme.Challenge{Type: acme.ChallengeTypeHTTP01, Token: "tok", KeyAuthorization: "tok.thumb",
			Identifier: acme.Identifier{Type: "dns", Value: "shop.example.com"}}
		if err := s.Present(t.Context(), chal); err != nil {
			t.Fatal(err)
		}
		mat, gen := m.Material()
		if len(mat.HTTPChallenges) != 1 || mat.HTTPChallenges[0].KeyAuthorization != "tok.thumb" || reloads.Load() != 1 {
			t.Fatalf("after Present: material %+v, %d reloads", mat, reloads.Load())
		}
		done := make(chan error, 1)
		go func() { done <- s.Wait(t.Context(), chal) }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Wait returned %v before the gateways were given the challenge", err)
		default:
		}
		m.Applied(gen)
		if err := <-done; err != nil {
			t.Fatalf("Wait: %v", err)
		}

		// Never applied: Wait gives up after challengeReadyTimeout.
		if err := s.Present(t.Context(), acme.Challenge{Type: acme.ChallengeTypeHTTP01, Token: "other", KeyAuthorization: "x",
			Identifier: acme.Identifier{Type: "dns", Value: "shop.example.com"}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.Wait(t.Context(), chal); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait = %v, want a deadline error", err)
		}
		if waited := time.Since(start); waited != challengeReadyTimeout {
			t.Errorf("Wait gave up after %v, want %v", waited, challengeReadyTimeout)
		}

		if err := s.CleanUp(t.Context(), chal); err != nil {
			t.Fatal(err)
		}
		if mat, _ := m.Material(); len(mat.HTTPChallenges) != 1 || mat.HTTPChallenges[0].Token != "other" {
			t.Errorf("after CleanUp: %+v, want the other challenge only", mat.HTTPChallenges)
		}
	})
}

// TestSharedChallenges: a challenge one replica presents is stored, and
// served by another replica sharing the state once it reads them; both
// forget it once cleaned up. A TLS-ALPN-01 challenge carries its
// certificate.
func TestSharedChallenges(t *testing.T) {
	t.Parallel()
	store := state.NewMemory()
	a := New(t.Context(), Options{Store: store})
	b := New(t.Context(), Options{Store: store})
	chal := acme.Challenge{Type: acme.ChallengeTypeTLSALPN01, Token: "tok", KeyAuthorization: "tok.thumb",
		Identifier: acme.Identifier{Type: "dns", Value: "shop.example.com"}}
	if err := (&solver{m: a}).Present(t.Context(), chal); err != nil {
		t.Fatal(err)
	}
	b.loadChallenges(t.Context())
	mat, _ := b.Material()
	if len(mat.TLSALPNChallenges) != 1 || mat.TLSALPNChallenges[0].Hostname != "shop.example.com" ||
		mat.TLSALPNChallenges[0].Certificate.Secret != "acme-challenge/shop.example.com" || len(mat.TLSALPNChallenges[0].Certificate.KeyPEM) == 0 {
		t.Fatalf("the other replica's material: %+v", mat)
	}
	if err := (&solver{m: a}).CleanUp(t.Context(), chal); err != nil {
		t.Fatal(err)
	}
	b.loadChallenges(t.Context())
	if mat, _ := b.Material(); len(mat.TLSALPNChallenges) != 0 {
		t.Errorf("after CleanUp the other replica still serves %+v", mat.TLSALPNChallenges)
	}

	// A challenge left by a replica that stopped is served until it
	// expires, then deleted.
	stale := sharedChallenge{Type: acme.ChallengeTypeHTTP01, Hostname: "shop.example.com", Token: "stale", KeyAuthorization: "x", Expires: time.Now().Add(-time.Second)}
	if err := a.storeChallenge(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	b.loadChallenges(t.Context())
	if mat, _ := b.Material(); len(mat.HTTPChallenges) != 0 {
		t.Errorf("an expired challenge is served: %+v", mat.HTTPChallenges)
	}
	if keys, _ := store.List(t.Context(), storagePrefix+challengesDir+"/"); len(keys) != 0 {
		t.Errorf("an expired challenge is still stored: %v", keys)
	}
}
