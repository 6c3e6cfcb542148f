package ca

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/state/consultest"
	"github.com/meshgate/meshgate/controlplane/tokens"
	"github.com/meshgate/meshgate/internal/testutil"
)

// replica is one control plane's CA over a shared store.
type replica struct {
	ca      *CA
	changes atomic.Int32
}

func newReplica(t *testing.T, st state.Store, clk *clock) (*replica, error) {
	t.Helper()
	r := &replica{}
	c, err := New(context.Background(), Options{Store: st, Now: clk.now, OnChange: func(Status) { r.changes.Add(1) }})
	if err != nil {
		return nil, err
	}
	r.ca = c
	return r, nil
}

func consulStores(t *testing.T, n int) []state.Store {
	t.Helper()
	agent := consultest.Start(t)
	key := make([]byte, state.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	out := make([]state.Store, n)
	for i := range out {
		s, err := state.NewConsul(agent.Client, "meshgate/state/", key)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

// TestReplicasShareOneRoot starts CAs at once over one Consul store: they
// generate one root between them and all sign with it.
func TestReplicasShareOneRoot(t *testing.T) {
	t.Parallel()
	stores := consulStores(t, 4)
	clk := newClock()
	replicas := make([]*replica, len(stores))
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i, st := range stores {
		wg.Go(func() { replicas[i], errs[i] = newReplica(t, st, clk) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	signer := replicas[0].ca.Status().Signer
	for i, r := range replicas {
		if st := r.ca.Status(); st.Signer != signer || len(st.Roots) != 1 {
			t.Errorf("replica %d: signer %s with %d roots, want %s alone", i, st.Signer, len(st.Roots), signer)
		}
	}
	roots, err := stores[0].List(context.Background(), rootPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 2 { // one .pem, one .key
		t.Errorf("store holds %d root files, want the 2 of one root: %v", len(roots), keysOf(roots))
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestRotationAcrossReplicas: each rotation step done on one replica is
// served by the other after Reload; a step on a replica that has not
// reloaded starts from the store's state.
func TestRotationAcrossReplicas(t *testing.T) {
	t.Parallel()
	tests := map[string]func(t *testing.T) []state.Store{
		"memory": func(*testing.T) []state.Store { m := state.NewMemory(); return []state.Store{m, m} },
		"consul": func(t *testing.T) []state.Store { return consulStores(t, 2) },
	}
	for name, stores := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := stores(t)
			clk := newClock()
			a, err := newReplica(t, st[0], clk)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newReplica(t, st[1], clk)
			if err != nil {
				t.Fatal(err)
			}
			first := a.ca.Status().Signer
			if b.ca.Status().Signer != first {
				t.Fatal("replicas disagree on the root")
			}
			key := mustKey(t)
			oldLeaf, err := b.ca.IssueSVID(&key.PublicKey, ordersID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}

			if _, err := a.ca.Rotate(ctx, StepBegin, false, time.Hour); err != nil {
				t.Fatal(err)
			}
			if changed, err := b.ca.Reload(ctx); err != nil || !changed {
				t.Fatalf("Reload after begin elsewhere = %v, %v; want changed", changed, err)
			}
			if string(b.ca.TrustBundlePEM()) != string(a.ca.TrustBundlePEM()) || len(b.ca.Status().Roots) != 2 {
				t.Fatal("replica b does not serve a's new bundle")
			}
			if b.changes.Load() != 1 {
				t.Errorf("OnChange called %d times on b, want 1", b.changes.Load())
			}
			if changed, err := b.ca.Reload(ctx); err != nil || changed {
				t.Errorf("second Reload = %v, %v; want unchanged", changed, err)
			}

			// b switches; a, without reloading, sees the switch when it
			// runs the same step (a no-op) and serves it.
			if _, err := b.ca.Rotate(ctx, StepSwitch, false, time.Hour); err != nil {
				t.Fatal(err)
			}
			stA, err := a.ca.Rotate(ctx, StepSwitch, false, time.Hour)
			if err != nil {
				t.Fatalf("switch again on the other replica: %v", err)
			}
			if stA.Phase != PhaseSwitched || stA.Signer == first || stA.Signer != b.ca.Status().Signer {
				t.Fatalf("a after switch: %+v", stA)
			}
			// Certificates of either replica verify on the other.
			newLeaf, err := a.ca.IssueSVID(&key.PublicKey, ordersID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			for _, leaf := range []*Issued{oldLeaf, newLeaf} {
				for _, r := range []*replica{a, b} {
					if err := verifyAt(t, r.ca, leaf.Leaf, clk.now()); err != nil {
						t.Errorf("certificate does not verify on a replica: %v", err)
					}
				}
			}

			// a finishes (forced); b serves the single new root after Reload.
			if _, err := a.ca.Rotate(ctx, StepFinish, true, time.Hour); err != nil {
				t.Fatal(err)
			}
			if changed, err := b.ca.Reload(ctx); err != nil || !changed {
				t.Fatalf("Reload after finish = %v, %v", changed, err)
			}
			if stB := b.ca.Status(); stB.Phase != PhaseStable || len(stB.Roots) != 1 || stB.Signer != stA.Signer {
				t.Fatalf("b after finish: %+v", stB)
			}
			if err := verifyAt(t, b.ca, oldLeaf.Leaf, clk.now()); err == nil {
				t.Error("b still trusts the dropped root")
			}
			// A new rotation begun on b, stale or not, is one rotation.
			if _, err := b.ca.Rotate(ctx, StepBegin, false, time.Hour); err != nil {
				t.Fatal(err)
			}
			if st, err := a.ca.Rotate(ctx, StepBegin, false, time.Hour); err != nil || len(st.Roots) != 2 {
				t.Fatalf("begin on both replicas: %d roots, %v; want 2", len(st.Roots), err)
			}
		})
	}
}

// TestRunFollowsTheStore: Run reloads on its own when another replica
// rotates (through the Consul watch, or the interval).
func TestRunFollowsTheStore(t *testing.T) {
	t.Parallel()
	st := consulStores(t, 2)
	clk := newClock()
	a, err := newReplica(t, st[0], clk)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newReplica(t, st[1], clk)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.ca.Run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()

	// The watch may be established after a's step: keep writing under
	// ca/ until b follows.
	if _, err := a.ca.Rotate(ctx, StepBegin, false, time.Hour); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "b follows a's rotation", func() error {
		if n := len(b.ca.Status().Roots); n != 2 {
			if err := st[0].Put(ctx, "ca/test-touch", []byte(time.Now().String())); err != nil {
				t.Fatal(err)
			}
			return fmt.Errorf("b has %d roots", n)
		}
		return nil
	})
}

// TestTokensAcrossReplicas: a join token created through one replica's
// registry verifies on another's when both use the Consul store.
func TestTokensAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := consulStores(t, 2)
	clk := newClock()
	a, err := newReplica(t, st[0], clk)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newReplica(t, st[1], clk)
	if err != nil {
		t.Fatal(err)
	}
	regA, err := tokens.New(tokens.Options{Store: st[0], PinRoot: a.ca.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	regB, err := tokens.New(tokens.Options{Store: st[1], PinRoot: b.ca.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	tok, rec, err := regA.Create(ctx, "orders", "default", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := regB.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("token from replica a does not verify on b: %v", err)
	}
	if got.ID != rec.ID || got.Service != "orders" {
		t.Errorf("verified record = %+v, want %+v", got, rec)
	}
	if _, err := regB.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := regA.Verify(ctx, tok); err == nil {
		t.Error("a token revoked on b still verifies on a")
	}
}

// TestRevocationsAcrossReplicas: an identity revoked, an enrolment revoked
// and a token revoked through one replica refuse the certificates on
// another when both use the Consul store.
func TestRevocationsAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := consulStores(t, 2)
	clk := newClock()
	a, err := newReplica(t, st[0], clk)
	if err != nil {
		t.Fatal(err)
	}
	regA, err := tokens.New(tokens.Options{Store: st[0], PinRoot: a.ca.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	regB, err := tokens.New(tokens.Options{Store: st[1], PinRoot: a.ca.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	revA, revB := NewRevocations(st[0], regA, clk.now), NewRevocations(st[1], regB, clk.now)
	issue := func(id spiffeid.ID, tokenID string) *Issued {
		t.Helper()
		e, err := NewEnrolment(tokenID, clk.now())
		if err != nil {
			t.Fatal(err)
		}
		key := mustKey(t)
		issued, err := a.ca.IssueEnrolled(&key.PublicKey, id, time.Hour, e)
		if err != nil {
			t.Fatal(err)
		}
		return issued
	}
	_, tokRec, err := regA.Create(ctx, "orders", "default", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	users := spiffeid.ID{TrustDomain: "meshgate.local", Namespace: "default", Service: "users"}
	byToken, byEnrolment, byIdentity := issue(ordersID, tokRec.ID), issue(ordersID, ""), issue(users, "")
	clk.add(2 * time.Second)
	if _, err := regA.Revoke(ctx, tokRec.ID); err != nil {
		t.Fatal(err)
	}
	e, _ := EnrolmentOf(byEnrolment.Leaf)
	if _, err := revA.RevokeEnrolment(ctx, e.ID, ordersID.String(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := revA.RevokeIdentity(ctx, users); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		id     spiffeid.ID
		issued *Issued
	}{"token": {ordersID, byToken}, "enrolment": {ordersID, byEnrolment}, "identity": {users, byIdentity}} {
		if err := revB.CheckCertificate(ctx, c.id, c.issued.Leaf); !errors.Is(err, ErrRevoked) {
			t.Errorf("revoked %s on replica a; replica b says %v", name, err)
		}
	}
}
