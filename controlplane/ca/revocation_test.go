package ca

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

func TestEnrolmentRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	for _, tokenID := range []string{"0123456789abcdef", ""} {
		e, err := NewEnrolment(tokenID, at.Add(123*time.Microsecond))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseEnrolment(e.String())
		if !ok || got != e || !got.EnrolledAt.Equal(at) || !isHexID(got.ID) {
			t.Errorf("parse(%q) = %+v, %t; want %+v at %s", e.String(), got, ok, e, at)
		}
		if len(e.String()) > 64 {
			t.Errorf("%q is longer than a serialNumber attribute may be (64)", e.String())
		}
	}
	for _, bad := range []string{
		"", "hello", "mge1.0123456789abcdef.-", "mge2.0123456789abcdef.-.1",
		"mge1.0123456789ABCDEF.-.1", "mge1.0123456789abcdef.tok.1", "mge1.0123456789abcdef.-.-5",
		"mge1.0123456789abcdef.-.x", "mge1.0123456789abcdef.-.1.extra",
	} {
		if e, ok := parseEnrolment(bad); ok {
			t.Errorf("parse(%q) = %+v, want no lineage", bad, e)
		}
	}
}

// enrol gets a certificate for orders with the join token tok.
func (f *fixture) enrol(t *testing.T, tok string) (*tls.Certificate, error) {
	t.Helper()
	key := mustKey(t)
	resp, err := f.client(t, nil).Sign(context.Background(), &cav1.SignRequest{CsrPem: newCSR(t, key, ordersID.String()), Token: tok})
	if err != nil {
		return nil, err
	}
	return tlsCert(t, resp, key), nil
}

// renew renews cert with itself, as a proxy does.
func (f *fixture) renew(t *testing.T, cert *tls.Certificate) (*tls.Certificate, error) {
	t.Helper()
	key := mustKey(t)
	resp, err := f.client(t, cert).Sign(context.Background(), &cav1.SignRequest{CsrPem: newCSR(t, key, ordersID.String())})
	if err != nil {
		return nil, err
	}
	return tlsCert(t, resp, key), nil
}

func mustEnrol(t *testing.T, f *fixture, tok string) *tls.Certificate {
	t.Helper()
	cert, err := f.enrol(t, tok)
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	return cert
}

// wantCode checks err's gRPC code, and that the revocation checks of the
// store and of a snapshot agree with it for cert.
func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %s (%v), want %s", what, got, err, want)
	}
}

// checkBoth runs CheckCertificate against the store and against a
// snapshot: both must say revoked (or not) alike.
func checkBoth(t *testing.T, f *fixture, cert *tls.Certificate, revoked bool) {
	t.Helper()
	ctx := context.Background()
	errStore := f.revocations.CheckCertificate(ctx, ordersID, cert.Leaf)
	snap, err := f.revocations.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errSnap := snap.CheckCertificate(ordersID, cert.Leaf)
	if errors.Is(errStore, ErrRevoked) != revoked || errors.Is(errSnap, ErrRevoked) != revoked {
		t.Errorf("certificate %s: store says %v, snapshot %v; want revoked=%t", cert.Leaf.Subject.SerialNumber, errStore, errSnap, revoked)
	}
}

// TestLineage: a certificate enrolled with a token carries a lineage naming
// the token; renewals inherit it; a certificate without one (issued before
// lineages) renews into a new lineage.
func TestLineage(t *testing.T) {
	t.Parallel()
	f := startService(t)
	tok, rec := f.token(t, "orders")
	first := mustEnrol(t, f, tok)
	e, ok := EnrolmentOf(first.Leaf)
	if !ok || e.TokenID != rec.ID || !isHexID(e.ID) {
		t.Fatalf("enrolled certificate's lineage: %+v, %t; want one naming token %s", e, ok, rec.ID)
	}
	renewed, err := f.renew(t, first)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := EnrolmentOf(renewed.Leaf); !ok || got != e {
		t.Errorf("renewed certificate's lineage %+v, want the inherited %+v", got, e)
	}
	other := mustEnrol(t, f, tok)
	if got, _ := EnrolmentOf(other.Leaf); got.ID == e.ID {
		t.Error("a second enrolment with the same token shares the first's lineage")
	}

	legacyKey := mustKey(t)
	legacy, err := f.ca.IssueSVID(&legacyKey.PublicKey, ordersID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := EnrolmentOf(legacy.Leaf); ok {
		t.Fatal("IssueSVID wrote a lineage")
	}
	upgraded, err := f.renew(t, &tls.Certificate{Certificate: legacy.ChainDER, PrivateKey: legacyKey, Leaf: legacy.Leaf})
	if err != nil {
		t.Fatalf("renewing a certificate without a lineage: %v", err)
	}
	if got, ok := EnrolmentOf(upgraded.Leaf); !ok || got.TokenID != "" {
		t.Errorf("renewed legacy certificate's lineage: %+v, %t; want a new one without a token", got, ok)
	}
}

// TestRevocation: revoking a token, an identity or one enrolment refuses
// the renewals it covers and no others.
func TestRevocation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("token", func(t *testing.T) {
		t.Parallel()
		f := startService(t)
		revokedTok, revokedRec := f.token(t, "orders")
		keptTok, _ := f.token(t, "orders")
		evicted := mustEnrol(t, f, revokedTok)
		kept := mustEnrol(t, f, keptTok)
		if _, err := f.tokens.Revoke(ctx, revokedRec.ID); err != nil {
			t.Fatal(err)
		}
		_, err := f.renew(t, evicted)
		wantCode(t, "renewal of a revoked token's proxy", err, codes.PermissionDenied)
		checkBoth(t, f, evicted, true)
		_, err = f.renew(t, kept)
		wantCode(t, "renewal of another token's proxy", err, codes.OK)
		checkBoth(t, f, kept, false)
		_, err = f.enrol(t, revokedTok)
		wantCode(t, "enrolment with the revoked token", err, codes.Unauthenticated)
	})

	t.Run("identity", func(t *testing.T) {
		t.Parallel()
		f := startService(t)
		oldTok, _ := f.token(t, "orders")
		a, b := mustEnrol(t, f, oldTok), mustEnrol(t, f, oldTok)
		usersKey := mustKey(t)
		users := spiffeid.ID{TrustDomain: "meshgate.local", Namespace: "default", Service: "users"}
		usersIssued, err := f.ca.IssueEnrolled(&usersKey.PublicKey, users, time.Hour, Enrolment{ID: "00000000000000aa", EnrolledAt: f.clock.now()})
		if err != nil {
			t.Fatal(err)
		}
		f.clock.add(2 * time.Second)
		rev, err := f.revocations.RevokeIdentity(ctx, ordersID)
		if err != nil || rev.Kind != RevokedIdentity || rev.SPIFFEID != ordersID.String() {
			t.Fatalf("RevokeIdentity = %+v, %v", rev, err)
		}
		for name, cert := range map[string]*tls.Certificate{"a": a, "b": b} {
			_, err := f.renew(t, cert)
			wantCode(t, "renewal of proxy "+name+" of the revoked identity", err, codes.PermissionDenied)
			checkBoth(t, f, cert, true)
		}
		if err := f.revocations.CheckCertificate(ctx, users, usersIssued.Leaf); err != nil {
			t.Errorf("another identity's certificate: %v", err)
		}
		_, err = f.enrol(t, oldTok)
		wantCode(t, "enrolment with a token created before the revocation", err, codes.Unauthenticated)

		f.clock.add(2 * time.Second)
		newTok, _ := f.token(t, "orders")
		again, err := f.enrol(t, newTok)
		wantCode(t, "enrolment with a token created after the revocation", err, codes.OK)
		if err == nil {
			_, err = f.renew(t, again)
			wantCode(t, "renewal of the new enrolment", err, codes.OK)
			checkBoth(t, f, again, false)
		}
	})

	t.Run("enrolment", func(t *testing.T) {
		t.Parallel()
		f := startService(t)
		tok, _ := f.token(t, "orders")
		evicted, kept := mustEnrol(t, f, tok), mustEnrol(t, f, tok)
		e, _ := EnrolmentOf(evicted.Leaf)
		rev, err := f.revocations.RevokeEnrolment(ctx, e.ID, ordersID.String(), "sidecar~orders~a")
		if err != nil || rev.Kind != RevokedEnrolment || rev.Enrolment != e.ID || rev.Node != "sidecar~orders~a" {
			t.Fatalf("RevokeEnrolment = %+v, %v", rev, err)
		}
		again, err := f.revocations.RevokeEnrolment(ctx, e.ID, "", "")
		if err != nil || !again.RevokedAt.Equal(rev.RevokedAt) || again.Node != rev.Node {
			t.Errorf("second RevokeEnrolment = %+v, %v; want the first record", again, err)
		}
		_, err = f.renew(t, evicted)
		wantCode(t, "renewal of the revoked enrolment", err, codes.PermissionDenied)
		checkBoth(t, f, evicted, true)
		_, err = f.renew(t, kept)
		wantCode(t, "renewal of another enrolment of the same identity", err, codes.OK)
		checkBoth(t, f, kept, false)
		if _, err := f.revocations.RevokeEnrolment(ctx, "../../x", "", ""); !errors.Is(err, ErrUnknownEnrolment) {
			t.Errorf("RevokeEnrolment of a bad id = %v", err)
		}
		list, err := f.revocations.List(ctx)
		if err != nil || len(list) != 1 || list[0].Enrolment != e.ID {
			t.Errorf("List = %+v, %v", list, err)
		}
	})

	t.Run("identity catches a certificate without a lineage", func(t *testing.T) {
		t.Parallel()
		f := startService(t)
		key := mustKey(t)
		legacy, err := f.ca.IssueSVID(&key.PublicKey, ordersID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: legacy.ChainDER, PrivateKey: key, Leaf: legacy.Leaf}
		checkBoth(t, f, cert, false)
		f.clock.add(2 * time.Second)
		if _, err := f.revocations.RevokeIdentity(ctx, ordersID); err != nil {
			t.Fatal(err)
		}
		_, err = f.renew(t, cert)
		wantCode(t, "renewal of a certificate without a lineage of a revoked identity", err, codes.PermissionDenied)
		checkBoth(t, f, cert, true)
	})
}

// failingStore fails every read: the checks must say so, not allow.
type failingStore struct{ state.Store }

func (failingStore) Get(context.Context, string) ([]byte, error) {
	return nil, errors.New("store unreachable")
}

func TestRevocationStoreDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	st := state.NewMemory()
	c := newCA(t, st, clk)
	reg, err := tokens.New(tokens.Options{Store: st, PinRoot: c.SignerDER, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t)
	issued, err := c.IssueEnrolled(&key.PublicKey, ordersID, time.Hour, Enrolment{ID: "0123456789abcdef", TokenID: "fedcba9876543210", EnrolledAt: clk.now()})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRevocations(failingStore{st}, reg, clk.now)
	if err := r.CheckCertificate(ctx, ordersID, issued.Leaf); err == nil || errors.Is(err, ErrRevoked) {
		t.Errorf("CheckCertificate with the store down = %v, want an error other than ErrRevoked", err)
	}
	if err := r.CheckToken(ctx, ordersID, tokens.Record{ID: "fedcba9876543210"}); err == nil || errors.Is(err, ErrRevoked) {
		t.Errorf("CheckToken with the store down = %v, want an error other than ErrRevoked", err)
	}
}

// TestRenewalWhileTheStoreIsDown: renewals go on while the store cannot be
// read, except for certificates the revocations last read revoke.
func TestRenewalWhileTheStoreIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := startService(t)
	tok, _ := f.token(t, "orders")
	evicted, kept := mustEnrol(t, f, tok), mustEnrol(t, f, tok)
	e, _ := EnrolmentOf(evicted.Leaf)
	if _, err := f.revocations.RevokeEnrolment(ctx, e.ID, ordersID.String(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := f.revocations.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	f.revocations.store = failingStore{f.revocations.store} // before any renewal: no race
	_, err := f.renew(t, kept)
	wantCode(t, "renewal with the store down", err, codes.OK)
	_, err = f.renew(t, evicted)
	wantCode(t, "renewal of a revoked enrolment with the store down", err, codes.PermissionDenied)
}
