package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/controlplane/state"
)

// clock is a settable test clock.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	return c
}
func (c *clock) now() time.Time      { return *c.t.Load() }
func (c *clock) set(t time.Time)     { c.t.Store(&t) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func newCA(t *testing.T, st state.Store, c *clock) *CA {
	t.Helper()
	ca, err := New(context.Background(), Options{Store: st, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var ordersID = spiffeid.ID{TrustDomain: "meshgate.local", Namespace: "default", Service: "orders"}

// verifyAt checks leaf against the CA's bundle at time at.
func verifyAt(t *testing.T, c *CA, leaf *x509.Certificate, at time.Time) error {
	t.Helper()
	_, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func TestIssueSVID(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCA(t, state.NewMemory(), clk)
	key := mustKey(t)
	issued, err := c.IssueSVID(&key.PublicKey, ordersID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := issued.Leaf
	if err := verifyAt(t, c, leaf, clk.now()); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://meshgate.local/ns/default/svc/orders" {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
		t.Errorf("unexpected SANs or CA flag: %v %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.IsCA)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Equal(clk.now().Add(-ClockSkew)) || !leaf.NotAfter.Equal(clk.now().Add(time.Hour)) {
		t.Errorf("validity = %s .. %s", leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial = %s", leaf.SerialNumber)
	}
	block, _ := pem.Decode(issued.ChainPEM)
	if block == nil || string(block.Bytes) != string(leaf.Raw) {
		t.Error("ChainPEM does not start with the leaf")
	}
	if err := verifyAt(t, c, leaf, clk.now().Add(2*time.Hour)); err == nil {
		t.Error("leaf verifies after its expiry")
	}

	// A TTL beyond the root's life is capped by the root's expiry.
	long, err := c.IssueSVID(&key.PublicKey, ordersID, 20*RootValidity)
	if err != nil {
		t.Fatal(err)
	}
	if rootNotAfter := c.Status().Roots[0].NotAfter; !long.Leaf.NotAfter.Equal(rootNotAfter) {
		t.Errorf("NotAfter = %s, want capped at root expiry %s", long.Leaf.NotAfter, rootNotAfter)
	}
	if _, err := c.IssueSVID(&key.PublicKey, ordersID, time.Second); err == nil {
		t.Error("ttl below the minimum accepted")
	}
}

func TestRotationOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	c := newCA(t, state.NewMemory(), clk)
	key := mustKey(t)
	const ttl = time.Hour
	oldLeaf, err := c.IssueSVID(&key.PublicKey, ordersID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	first := c.Status().Signer

	steps := []struct {
		step      Step
		force     bool
		advance   time.Duration
		wantErr   error
		wantPhase Phase
		wantRoots int
	}{
		{step: StepSwitch, wantErr: ErrRotationOrder},
		{step: StepFinish, wantErr: ErrRotationOrder},
		{step: StepBegin, wantPhase: PhasePrepared, wantRoots: 2},
		{step: StepBegin, wantPhase: PhasePrepared, wantRoots: 2}, // idempotent
		{step: StepFinish, wantErr: ErrRotationOrder},
		{step: StepSwitch, wantPhase: PhaseSwitched, wantRoots: 2},
		{step: StepSwitch, wantPhase: PhaseSwitched, wantRoots: 2}, // idempotent
		{step: StepBegin, wantErr: ErrRotationOrder},
		{step: StepFinish, wantErr: ErrFinishTooEarly},
		{step: StepFinish, advance: ttl - time.Second, wantErr: ErrFinishTooEarly},
		{step: StepFinish, advance: time.Second, wantPhase: PhaseStable, wantRoots: 1},
		{step: StepFinish, wantErr: ErrRotationOrder},
		{step: "sideways", wantErr: nil},
	}
	for i, s := range steps {
		clk.add(s.advance)
		st, err := c.Rotate(ctx, s.step, s.force, ttl)
		if s.step == "sideways" {
			if err == nil {
				t.Errorf("step %d: unknown step accepted", i)
			}
			continue
		}
		if s.wantErr != nil {
			if !errors.Is(err, s.wantErr) {
				t.Errorf("step %d %s: err = %v, want %v", i, s.step, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d %s: %v", i, s.step, err)
		}
		if st.Phase != s.wantPhase || len(st.Roots) != s.wantRoots {
			t.Errorf("step %d %s: phase %s with %d roots, want %s with %d", i, s.step, st.Phase, len(st.Roots), s.wantPhase, s.wantRoots)
		}
		if s.step == StepSwitch {
			// Old certificates still verify, new ones come from the new root.
			if err := verifyAt(t, c, oldLeaf.Leaf, clk.now()); err != nil {
				t.Errorf("old certificate no longer verifies after switch: %v", err)
			}
			if st.Signer == first {
				t.Error("signer did not change at switch")
			}
		}
	}
	if st := c.Status(); st.Signer == first || len(st.Roots) != 1 || st.Roots[0].ID != st.Signer {
		t.Errorf("after finish: %+v", st)
	}
	if err := verifyAt(t, c, oldLeaf.Leaf, oldLeaf.Leaf.NotBefore.Add(time.Minute)); err == nil {
		t.Error("a certificate of the dropped root still verifies")
	}
	newLeaf, err := c.IssueSVID(&key.PublicKey, ordersID, ttl)
	if err != nil || verifyAt(t, c, newLeaf.Leaf, clk.now()) != nil {
		t.Errorf("new certificate after rotation: %v", err)
	}

	// Force skips the wait.
	for _, step := range []Step{StepBegin, StepSwitch} {
		if _, err := c.Rotate(ctx, step, false, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Rotate(ctx, StepFinish, true, ttl); err != nil {
		t.Errorf("forced finish: %v", err)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	clk := newClock()
	open := func() *CA {
		st, err := state.OpenFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		return newCA(t, st, clk)
	}
	a := open()
	b := open()
	if string(a.TrustBundlePEM()) != string(b.TrustBundlePEM()) {
		t.Fatal("a second CA over the same state has other roots")
	}
	if _, err := a.Rotate(ctx, StepBegin, false, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Rotate(ctx, StepSwitch, false, time.Hour); err != nil {
		t.Fatal(err)
	}
	c := open()
	sa, sc := a.Status(), c.Status()
	if sc.Phase != PhaseSwitched || sc.Signer != sa.Signer || len(sc.Roots) != 2 || !sc.SwitchedAt.Equal(*sa.SwitchedAt) {
		t.Fatalf("restarted status %+v, want %+v", sc, sa)
	}
	// The restarted CA signs with the persisted key: its certificates
	// verify under the first instance's bundle.
	key := mustKey(t)
	issued, err := c.IssueSVID(&key.PublicKey, ordersID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyAt(t, a, issued.Leaf, clk.now()); err != nil {
		t.Fatalf("certificate of the restarted CA: %v", err)
	}
	keyFile := filepath.Join(dir, "ca", "roots", sc.Signer+".key")
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("root key file %s: %v %v", keyFile, st.Mode(), err)
	}
}

func TestOperatorRoot(t *testing.T) {
	t.Parallel()
	clk := newClock()
	managed := newCA(t, state.NewMemory(), clk)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	v := managed.cur.Load()
	keyDER, err := x509.MarshalPKCS8PrivateKey(v.signer.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, v.signer.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Options{CertFile: certFile, KeyFile: keyFile, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Status().Operator || string(c.TrustBundlePEM()) != string(managed.TrustBundlePEM()) {
		t.Errorf("operator CA status %+v", c.Status())
	}
	key := mustKey(t)
	issued, err := c.IssueSVID(&key.PublicKey, ordersID, time.Hour)
	if err != nil || verifyAt(t, managed, issued.Leaf, clk.now()) != nil {
		t.Fatalf("operator CA issue: %v", err)
	}
	if _, err := c.Rotate(context.Background(), StepBegin, false, time.Hour); !errors.Is(err, ErrOperatorRoot) {
		t.Errorf("Rotate with an operator root = %v", err)
	}

	otherKey := mustKey(t)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	mismatched := filepath.Join(dir, "other.key")
	if err := os.WriteFile(mismatched, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]Options{
		"mismatched key": {CertFile: certFile, KeyFile: mismatched},
		"cert only":      {CertFile: certFile},
		"missing file":   {CertFile: filepath.Join(dir, "nope"), KeyFile: keyFile},
	} {
		if _, err := New(context.Background(), opts); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestServingCert(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	c := newCA(t, state.NewMemory(), clk)
	td := atomic.Pointer[string]{}
	domain := "meshgate.local"
	td.Store(&domain)
	settings := func() (string, time.Duration) { return *td.Load(), time.Hour }
	s := NewServingCert(c, settings, &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 15010})

	first, err := s.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://meshgate.local/ns/meshgate-system/svc/controlplane" {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if err := leaf.VerifyHostname("10.1.2.3"); err != nil {
		t.Error(err)
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Error(err)
		}
	}
	if len(first.Certificate) != 2 || string(first.Certificate[1]) != string(c.SignerDER()) {
		t.Errorf("serving chain has %d certificates, want the leaf and the root", len(first.Certificate))
	}
	again, _ := s.Certificate()
	if again != first {
		t.Error("certificate re-issued while fresh")
	}
	clk.add(31 * time.Minute)
	renewed, _ := s.Certificate()
	if renewed == first {
		t.Error("certificate not re-issued after half its life")
	}
	if _, err := c.Rotate(ctx, StepBegin, false, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Certificate(); got != renewed {
		t.Error("certificate re-issued at begin, while the old root still signs")
	}
	if _, err := c.Rotate(ctx, StepSwitch, false, time.Hour); err != nil {
		t.Fatal(err)
	}
	switched, _ := s.Certificate()
	if len(switched.Certificate) != 3 || string(switched.Certificate[1]) != string(c.SignerDER()) {
		t.Errorf("serving chain during rotation has %d certificates, want the leaf, the new root, the old root", len(switched.Certificate))
	}
	if switched == renewed || string(switched.Leaf.AuthorityKeyId) == string(renewed.Leaf.AuthorityKeyId) {
		t.Error("certificate not re-issued by the new root after switch")
	}
	other := "example.org"
	td.Store(&other)
	moved, _ := s.Certificate()
	if moved.Leaf.URIs[0].Host != "example.org" {
		t.Errorf("trust domain change: URI %v", moved.Leaf.URIs[0])
	}
}

// TestServingCertShortTTL: with the shortest certificate lifetime, the
// serving certificate is re-issued once per half lifetime, not on every
// handshake (its NotBefore is back-dated by ClockSkew, a full minute).
func TestServingCertShortTTL(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := newCA(t, state.NewMemory(), clk)
	settings := func() (string, time.Duration) { return "meshgate.local", MinTTL }
	s := NewServingCert(c, settings, nil)
	issued := map[*tls.Certificate]bool{}
	// Ten minutes of handshakes, one per second.
	for range 600 {
		cert, err := s.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		issued[cert] = true
		clk.add(time.Second)
	}
	// One per 30 s: 20 over 600 s (one more for rounding).
	if len(issued) > 21 {
		t.Errorf("%d serving certificates issued in 10 minutes with a 1 min TTL, want about 20", len(issued))
	}
}

// newCSR returns a PEM CSR signed by key with the given URI SANs.
func newCSR(t testing.TB, key any, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
