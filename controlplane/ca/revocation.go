package ca

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

// ErrRevoked is wrapped by the errors of the revocation checks: the
// certificate's token, identity or enrolment was revoked.
var ErrRevoked = errors.New("revoked")

// ErrUnknownEnrolment is returned (wrapped) by RevokeEnrolment for an id that
// is not 16 hex digits.
var ErrUnknownEnrolment = errors.New("not an enrolment id")

// Revocation kinds.
const (
	// RevokedIdentity: every certificate of a SPIFFE ID issued before
	// RevokedAt, and every join token for it created before then.
	RevokedIdentity = "identity"
	// RevokedEnrolment: one proxy's certificate lineage.
	RevokedEnrolment = "enrolment"
)

// Revocation is one revoked identity or enrolment, as kept in the store.
type Revocation struct {
	Kind string `json:"kind"`
	// SPIFFEID is the revoked identity (Kind identity), or the identity of
	// the revoked enrolment when it was known.
	SPIFFEID string `json:"spiffeID,omitempty"`
	// Enrolment is the revoked lineage (Kind enrolment).
	Enrolment string `json:"enrolment,omitempty"`
	// Node is the proxy the enrolment was revoked by, for the record.
	Node      string    `json:"node,omitempty"`
	RevokedAt time.Time `json:"revokedAt"`
}

// Key prefixes of the revocations in the store.
const (
	revocationPrefix = "revocations/"
	identityPrefix   = revocationPrefix + "identities/"
	enrolmentPrefix  = revocationPrefix + "enrolments/"
)

// TokenLookup reads join token records; *tokens.Registry is one.
type TokenLookup interface {
	Lookup(ctx context.Context, id string) (tokens.Record, error)
	List(ctx context.Context) ([]tokens.Record, error)
}

// Revocations keeps the revoked identities and enrolments in the control
// plane's store, where every replica sharing it reads them, and checks a
// proxy's certificate against them and against its join token. It is safe
// for concurrent use.
type Revocations struct {
	store  state.Store
	tokens TokenLookup
	now    func() time.Time
	// last is the latest Snapshot: what KnownRevoked checks while the
	// store cannot be read.
	last atomic.Pointer[RevocationSet]
}

// NewRevocations returns the revocation registry over store; tokens looks up
// the join token a lineage enrolled with. now is the clock (nil: time.Now).
func NewRevocations(store state.Store, tokens TokenLookup, now func() time.Time) *Revocations {
	if now == nil {
		now = time.Now
	}
	return &Revocations{store: store, tokens: tokens, now: now}
}

// RevokeIdentity revokes id: every certificate of it issued until now can no
// longer be renewed nor open an xDS stream, and join tokens for it created
// until now no longer enrol. A token created afterwards enrols again.
// Revoking again moves the revocation time to now.
func (r *Revocations) RevokeIdentity(ctx context.Context, id spiffeid.ID) (Revocation, error) {
	rev := Revocation{Kind: RevokedIdentity, SPIFFEID: id.String(), RevokedAt: r.now().UTC()}
	return rev, r.put(ctx, identityKey(id.String()), rev)
}

// RevokeEnrolment revokes one proxy's certificate lineage: its certificates
// can no longer be renewed nor open an xDS stream. id and node (may be
// empty) are recorded with it. Revoking twice keeps the first record.
func (r *Revocations) RevokeEnrolment(ctx context.Context, enrolment, spiffeID, node string) (Revocation, error) {
	if !isHexID(enrolment) {
		return Revocation{}, fmt.Errorf("%w: %q (want 16 hex digits, as `meshgate proxies` shows)", ErrUnknownEnrolment, enrolment)
	}
	key := enrolmentPrefix + enrolment + ".json"
	if b, err := r.store.Get(ctx, key); err == nil {
		var old Revocation
		if json.Unmarshal(b, &old) == nil {
			return old, nil
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return Revocation{}, fmt.Errorf("ca: revocations: %w", err)
	}
	rev := Revocation{Kind: RevokedEnrolment, Enrolment: enrolment, SPIFFEID: spiffeID, Node: node, RevokedAt: r.now().UTC()}
	return rev, r.put(ctx, key, rev)
}

func (r *Revocations) put(ctx context.Context, key string, rev Revocation) error {
	b, err := json.Marshal(rev)
	if err != nil {
		return fmt.Errorf("ca: encode revocation: %w", err)
	}
	if err := r.store.Put(ctx, key, b); err != nil {
		return fmt.Errorf("ca: save revocation: %w", err)
	}
	return nil
}

// identityKey is the store key of an identity's revocation: SPIFFE IDs hold
// characters keys may not.
func identityKey(spiffeID string) string {
	sum := sha256.Sum256([]byte(spiffeID))
	return identityPrefix + hex.EncodeToString(sum[:16]) + ".json"
}

// List returns every revocation, oldest first.
func (r *Revocations) List(ctx context.Context) ([]Revocation, error) {
	all, err := r.store.List(ctx, revocationPrefix)
	if err != nil {
		return nil, fmt.Errorf("ca: revocations: %w", err)
	}
	out := make([]Revocation, 0, len(all))
	for key, b := range all {
		var rev Revocation
		if err := json.Unmarshal(b, &rev); err != nil {
			return nil, fmt.Errorf("ca: decode %s: %w", key, err)
		}
		out = append(out, rev)
	}
	slices.SortFunc(out, func(a, b Revocation) int {
		return cmp.Or(a.RevokedAt.Compare(b.RevokedAt), strings.Compare(a.SPIFFEID+a.Enrolment, b.SPIFFEID+b.Enrolment))
	})
	return out, nil
}

// CheckCertificate reports, reading the store, whether the certificate leaf
// of identity id may still be renewed and open xDS streams: an error
// wrapping ErrRevoked when its join token, its identity (before the
// certificate's lineage started or it was issued) or its enrolment was
// revoked; another error when the store cannot tell.
func (r *Revocations) CheckCertificate(ctx context.Context, id spiffeid.ID, leaf *x509.Certificate) error {
	e, hasLineage := EnrolmentOf(leaf)
	var tok *tokens.Record
	if hasLineage && e.TokenID != "" {
		rec, err := r.tokens.Lookup(ctx, e.TokenID)
		switch {
		case err == nil:
			tok = &rec
		case !errors.Is(err, tokens.ErrNotFound):
			return fmt.Errorf("ca: join token %s: %w", e.TokenID, err)
		}
	}
	identity, err := r.get(ctx, identityKey(id.String()))
	if err != nil {
		return err
	}
	var enrolment *Revocation
	if hasLineage {
		if enrolment, err = r.get(ctx, enrolmentPrefix+e.ID+".json"); err != nil {
			return err
		}
	}
	return certificateRevoked(leaf, e, hasLineage, tok, identity, enrolment)
}

// CheckToken reports whether the join token rec may enrol identity id: an
// error wrapping ErrRevoked when id was revoked after rec was created.
// (Verify has already refused a revoked or expired token.)
func (r *Revocations) CheckToken(ctx context.Context, id spiffeid.ID, rec tokens.Record) error {
	identity, err := r.get(ctx, identityKey(id.String()))
	if err != nil || identity == nil {
		return err
	}
	if rec.CreatedAt.Before(identity.RevokedAt) {
		return fmt.Errorf("%w: identity %s was revoked at %s, after join token %s was created: create a new token",
			ErrRevoked, id, identity.RevokedAt.Format(time.RFC3339), rec.ID)
	}
	return nil
}

// get reads one revocation: nil when there is none.
func (r *Revocations) get(ctx context.Context, key string) (*Revocation, error) {
	b, err := r.store.Get(ctx, key)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: revocations: %w", err)
	}
	var rev Revocation
	if err := json.Unmarshal(b, &rev); err != nil {
		return nil, fmt.Errorf("ca: decode %s: %w", key, err)
	}
	return &rev, nil
}

// certificateRevoked is the one rule of CheckCertificate and
// RevocationSet.CheckCertificate, given what the store holds for leaf: its
// join token's record, its identity's revocation and its enrolment's (each
// nil when none).
func certificateRevoked(leaf *x509.Certificate, e Enrolment, hasLineage bool, tok *tokens.Record, identity, enrolment *Revocation) error {
	if tok != nil && tok.Revoked {
		return fmt.Errorf("%w: join token %s, which this proxy enrolled with, was revoked", ErrRevoked, tok.ID)
	}
	if enrolment != nil {
		return fmt.Errorf("%w: enrolment %s was revoked at %s", ErrRevoked, e.ID, enrolment.RevokedAt.Format(time.RFC3339))
	}
	if identity != nil {
		// A lineage that started before the revocation stays revoked even
		// if one of its certificates was issued after it (by a replica that
		// had not seen it yet).
		if IssuedAt(leaf).Before(identity.RevokedAt) || hasLineage && e.EnrolledAt.Before(identity.RevokedAt) {
			return fmt.Errorf("%w: identity %s was revoked at %s", ErrRevoked, identity.SPIFFEID, identity.RevokedAt.Format(time.RFC3339))
		}
	}
	return nil
}

// RevocationSet is every revocation and revoked token at one moment, read
// with two listings: what the control plane checks its open xDS streams
// against after a revocation.
type RevocationSet struct {
	identities map[string]*Revocation // by SPIFFE ID
	enrolments map[string]*Revocation // by enrolment id
	tokens     map[string]*tokens.Record
}

// Snapshot reads every revocation and every revoked join token.
func (r *Revocations) Snapshot(ctx context.Context) (*RevocationSet, error) {
	list, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	toks, err := r.tokens.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: join tokens: %w", err)
	}
	s := &RevocationSet{identities: map[string]*Revocation{}, enrolments: map[string]*Revocation{}, tokens: map[string]*tokens.Record{}}
	for i := range list {
		switch rev := &list[i]; rev.Kind {
		case RevokedIdentity:
			s.identities[rev.SPIFFEID] = rev
		case RevokedEnrolment:
			s.enrolments[rev.Enrolment] = rev
		}
	}
	for i := range toks {
		if toks[i].Revoked {
			s.tokens[toks[i].ID] = &toks[i]
		}
	}
	r.last.Store(s)
	return s, nil
}

// KnownRevoked checks leaf against the latest Snapshot taken (false when
// none was): the fallback of a renewal while the store cannot be read, so
// that a store outage neither lets a revocation this replica has seen lapse
// nor stops the mesh's certificates from renewing.
func (r *Revocations) KnownRevoked(id spiffeid.ID, leaf *x509.Certificate) error {
	if s := r.last.Load(); s != nil {
		return s.CheckCertificate(id, leaf)
	}
	return nil
}

// CheckCertificate is Revocations.CheckCertificate against the snapshot.
func (s *RevocationSet) CheckCertificate(id spiffeid.ID, leaf *x509.Certificate) error {
	e, hasLineage := EnrolmentOf(leaf)
	var tok *tokens.Record
	var enrolment *Revocation
	if hasLineage {
		tok = s.tokens[e.TokenID]
		enrolment = s.enrolments[e.ID]
	}
	return certificateRevoked(leaf, e, hasLineage, tok, s.identities[id.String()], enrolment)
}
