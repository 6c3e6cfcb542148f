// Package tokens is the control plane's registry of join tokens: a proxy's
// first proof of identity, bound to one service in one namespace. The
// registry keeps, per token, its public id, its binding, its expiry and
// whether it was revoked, and only the SHA-256 of its secret; the token
// string itself exists only in the answer to Create.
package tokens

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/controlplane/state"
)

// Errors of Verify and Revoke, wrapped. ErrInvalid covers a malformed token,
// an unknown id and a wrong secret alike, so that a caller cannot tell them
// apart.
var (
	ErrInvalid  = errors.New("invalid join token")
	ErrExpired  = errors.New("join token expired")
	ErrRevoked  = errors.New("join token revoked")
	ErrNotFound = errors.New("no such join token")
)

// Limits of Create.
const (
	DefaultTTL = 24 * time.Hour
	MaxTTL     = 366 * 24 * time.Hour
)

const keyPrefix = "tokens/"

// ReservedNamespace holds the control plane's own identity: no token binds
// to it.
const ReservedNamespace = spiffeid.ControlPlaneNamespace

// Record is what the registry knows of a token, without its secret.
type Record struct {
	ID        string     `json:"id"`
	Service   string     `json:"service"`
	Namespace string     `json:"namespace"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// stored is a Record as persisted: with the hash of the secret.
type stored struct {
	Record
	SecretSHA256 string `json:"secretSHA256"`
}

// Options configure a Registry.
type Options struct {
	Store state.Store
	// PinRoot returns the DER of the root new tokens are pinned to: the one
	// the control plane's serving certificate chains to.
	PinRoot func() []byte
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry creates, lists, revokes and verifies join tokens. It is safe for
// concurrent use.
type Registry struct {
	store   state.Store
	pinRoot func() []byte
	now     func() time.Time
	mu      sync.Mutex // serialises read-modify-write of one process
}

// New returns a registry over opts.Store.
func New(opts Options) (*Registry, error) {
	if opts.Store == nil || opts.PinRoot == nil {
		return nil, errors.New("tokens: Store and PinRoot are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Registry{store: opts.Store, pinRoot: opts.PinRoot, now: opts.Now}, nil
}

// Create makes a token for service in namespace, valid for ttl (0 means
// DefaultTTL). The returned string is the only copy of the secret.
func (r *Registry) Create(ctx context.Context, service, namespace string, ttl time.Duration) (string, Record, error) {
	if err := checkName("service", service); err != nil {
		return "", Record{}, err
	}
	if namespace == "" {
		namespace = "default"
	}
	if err := checkName("namespace", namespace); err != nil {
		return "", Record{}, err
	}
	if namespace == ReservedNamespace {
		return "", Record{}, fmt.Errorf("tokens: namespace %q is reserved for the control plane", namespace)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < time.Minute || ttl > MaxTTL {
		return "", Record{}, fmt.Errorf("tokens: ttl %s: must be between 1m and %s", ttl, MaxTTL)
	}
	tok, err := token.New(r.pinRoot())
	if err != nil {
		return "", Record{}, fmt.Errorf("tokens: %w", err)
	}
	now := r.now().UTC().Truncate(time.Second)
	hash := tok.SecretHash()
	s := stored{
		Record: Record{
			ID: tok.ID, Service: service, Namespace: namespace,
			CreatedAt: now, ExpiresAt: now.Add(ttl),
		},
		SecretSHA256: hex.EncodeToString(hash[:]),
	}
	if err := r.put(ctx, s); err != nil {
		return "", Record{}, err
	}
	return tok.String(), s.Record, nil
}

// List returns every token, expired and revoked ones included, sorted by
// creation time then id.
func (r *Registry) List(ctx context.Context) ([]Record, error) {
	all, err := r.store.List(ctx, keyPrefix)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	out := make([]Record, 0, len(all))
	for key, b := range all {
		var s stored
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("tokens: decode %s: %w", key, err)
		}
		out = append(out, s.Record)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Revoke marks the token id revoked; revoking twice is not an error.
func (r *Registry) Revoke(ctx context.Context, id string) (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.get(ctx, id)
	if err != nil {
		return Record{}, err
	}
	if s.Revoked {
		return s.Record, nil
	}
	now := r.now().UTC().Truncate(time.Second)
	s.Revoked, s.RevokedAt = true, &now
	if err := r.put(ctx, s); err != nil {
		return Record{}, err
	}
	return s.Record, nil
}

// Lookup returns the record of the token id, expired and revoked ones
// included: what the CA checks a certificate lineage enrolled with that
// token against. An unknown id is an error wrapping ErrNotFound.
func (r *Registry) Lookup(ctx context.Context, id string) (Record, error) {
	s, err := r.get(ctx, id)
	if err != nil {
		return Record{}, err
	}
	return s.Record, nil
}

// Verify returns the record of a valid token: well-formed, known, with the
// right secret, not revoked and not expired. Its errors never contain the
// secret.
func (r *Registry) Verify(ctx context.Context, tokenString string) (Record, error) {
	tok, err := token.Parse(tokenString)
	if err != nil {
		return Record{}, ErrInvalid
	}
	s, err := r.get(ctx, tok.ID)
	if errors.Is(err, ErrNotFound) {
		return Record{}, ErrInvalid
	}
	if err != nil {
		return Record{}, err
	}
	hash, err := hex.DecodeString(s.SecretSHA256)
	if err != nil || len(hash) != 32 || !tok.SecretMatches([32]byte(hash)) {
		return Record{}, ErrInvalid
	}
	if s.Revoked {
		return Record{}, fmt.Errorf("%w: %s", ErrRevoked, s.ID)
	}
	if !r.now().Before(s.ExpiresAt) {
		return Record{}, fmt.Errorf("%w: %s at %s", ErrExpired, s.ID, s.ExpiresAt.Format(time.RFC3339))
	}
	return s.Record, nil
}

func (r *Registry) get(ctx context.Context, id string) (stored, error) {
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return stored{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b, err := r.store.Get(ctx, keyPrefix+id+".json")
	if errors.Is(err, state.ErrNotFound) {
		return stored{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return stored{}, fmt.Errorf("tokens: %w", err)
	}
	var s stored
	if err := json.Unmarshal(b, &s); err != nil {
		return stored{}, fmt.Errorf("tokens: decode %s: %w", id, err)
	}
	return s, nil
}

func (r *Registry) put(ctx context.Context, s stored) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("tokens: encode: %w", err)
	}
	if err := r.store.Put(ctx, keyPrefix+s.ID+".json", b); err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	return nil
}

// checkName accepts a DNS label (api/dnslabel).
func checkName(what, s string) error {
	if err := dnslabel.Check(s); err != nil {
		return fmt.Errorf("tokens: %s %q: %w", what, s, err)
	}
	return nil
}
