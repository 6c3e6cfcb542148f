package jwtauthn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"sync"
	"time"
)

// Limits of JWKS documents.
const (
	maxJWKSBytes = 1 << 20 // a JWKS fetched or read larger than this is refused
	maxKeys      = 64
	// fileCheckEvery is how often a local_jwks filename is looked at again
	// (its size and modification time) to pick up a new version.
	fileCheckEvery = time.Second
	// refetchUnknownKid is the least time between two fetches of a remote
	// JWKS caused by tokens whose kid it does not hold (key rotation).
	refetchUnknownKid = time.Second
	// defaultCacheDuration is Envoy's default of remote_jwks.cache_duration.
	defaultCacheDuration = 10 * time.Minute
	// defaultFetchTimeout bounds a fetch when http_uri.timeout is unset.
	defaultFetchTimeout = 5 * time.Second
)

// jwk is one usable public key of a JWKS.
type jwk struct {
	kid string
	alg string // "" when the JWK does not say
	key crypto.PublicKey
}

// jwksDoc is the JSON of a JWKS (RFC 7517).
type jwksDoc struct {
	Keys []struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		N   string `json:"n"`
		E   string `json:"e"`
		Crv string `json:"crv"`
		X   string `json:"x"`
		Y   string `json:"y"`
	} `json:"keys"`
}

// parseJWKS parses a JWKS of RSA, EC (P-256, P-384, P-521) and OKP
// (Ed25519) public keys. Symmetric ("oct") keys are refused: tokens are
// verified with public keys only, so an HMAC token signed with a public key
// can never verify. Errors name the key.
func parseJWKS(data []byte) ([]jwk, error) {
	var doc jwksDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	if len(doc.Keys) == 0 {
		return nil, errors.New("JWKS: no keys")
	}
	if len(doc.Keys) > maxKeys {
		return nil, fmt.Errorf("JWKS: %d keys: at most %d", len(doc.Keys), maxKeys)
	}
	out := make([]jwk, 0, len(doc.Keys))
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var key crypto.PublicKey
		var err error
		switch k.Kty {
		case "RSA":
			key, err = rsaKey(k.N, k.E)
		case "EC":
			key, err = ecKey(k.Crv, k.X, k.Y)
		case "OKP":
			key, err = okpKey(k.Crv, k.X)
		default:
			err = fmt.Errorf("kty %q not supported (want RSA, EC or OKP)", k.Kty)
		}
		if err != nil {
			return nil, fmt.Errorf("JWKS: keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		out = append(out, jwk{kid: k.Kid, alg: k.Alg, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS: no signing keys")
	}
	return out, nil
}

func b64(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s: not base64url", field)
	}
	return b, nil
}

func rsaKey(n, e string) (crypto.PublicKey, error) {
	nb, err := b64("n", n)
	if err != nil {
		return nil, err
	}
	eb, err := b64("e", e)
	if err != nil {
		return nil, err
	}
	if len(eb) > 4 {
		return nil, errors.New("e: too large")
	}
	exp := int(new(big.Int).SetBytes(eb).Int64())
	if len(nb)*8 < 2048 || exp < 3 {
		return nil, errors.New("RSA keys need a modulus of at least 2048 bits and an exponent of at least 3")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: exp}, nil
}

func ecKey(crv, x, y string) (crypto.PublicKey, error) {
	var curve elliptic.Curve
	switch crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("crv %q not supported (want P-256, P-384 or P-521)", crv)
	}
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	yb, err := b64("y", y)
	if err != nil {
		return nil, err
	}
	size := (curve.Params().BitSize + 7) / 8
	if len(xb) != size || len(yb) != size {
		return nil, fmt.Errorf("x, y: want %d bytes each", size)
	}
	// The uncompressed point form, parsed by crypto/ecdh's checks.
	point := append(append([]byte{4}, xb...), yb...)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("x, y: %w", err)
	}
	return pub, nil
}

func okpKey(crv, x string) (crypto.PublicKey, error) {
	if crv != "Ed25519" {
		return nil, fmt.Errorf("crv %q not supported (want Ed25519)", crv)
	}
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	if len(xb) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("x: want %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(xb), nil
}

// keySource gives the keys a token may be verified with.
type keySource interface {
	// keys returns the current keys; kid is the token's (possibly ""), for
	// a source that refreshes when it does not know it.
	keys(ctx context.Context, kid string) ([]jwk, error)
}

// staticKeys is an inline JWKS.
type staticKeys []jwk

func (s staticKeys) keys(context.Context, string) ([]jwk, error) { return s, nil }

func hasKid(keys []jwk, kid string) bool {
	if kid == "" {
		return len(keys) > 0
	}
	for _, k := range keys {
		if k.kid == kid {
			return true
		}
	}
	return false
}

// fileKeys is a JWKS file (local_jwks.filename), read again when its size or
// modification time changes (looked at once per fileCheckEvery at most). A
// file that becomes unreadable or invalid keeps the last good keys.
type fileKeys struct {
	path   string
	now    func() time.Time
	logger *slog.Logger

	mu      sync.Mutex
	checked time.Time
	size    int64
	mtime   time.Time
	current []jwk
}

func newFileKeys(path string, now func() time.Time, logger *slog.Logger) (*fileKeys, error) {
	f := &fileKeys{path: path, now: now, logger: logger}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.checked = now()
	return f, nil
}

// load reads the file; on error the current keys stay.
func (f *fileKeys) load() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("local_jwks.filename %q: %w", f.path, err)
	}
	if st.Size() > maxJWKSBytes {
		return fmt.Errorf("local_jwks.filename %q: larger than %d bytes", f.path, maxJWKSBytes)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("local_jwks.filename %q: %w", f.path, err)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return fmt.Errorf("local_jwks.filename %q: %w", f.path, err)
	}
	f.size, f.mtime, f.current = st.Size(), st.ModTime(), keys
	return nil
}

func (f *fileKeys) keys(context.Context, string) ([]jwk, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.Sub(f.checked) >= fileCheckEvery {
		f.checked = now
		if st, err := os.Stat(f.path); err == nil && (st.Size() != f.size || !st.ModTime().Equal(f.mtime)) {
			if err := f.load(); err != nil {
				f.logger.Warn("JWKS file not reloaded: the previous keys stay", "error", err)
			}
		}
	}
	return f.current, nil
}

// remoteCache shares remote JWKS between the configurations a proxy
// compiles (one per JWT factory, so per proxy): bounded by the URLs
// configured over the proxy's life.
type remoteCache struct {
	client *http.Client
	mu     sync.Mutex
	byKey  map[remoteCacheKey]*remoteKeys
}

type remoteCacheKey struct {
	uri               string
	timeout, cacheFor time.Duration
}

func (c *remoteCache) get(key remoteCacheKey, create func() *remoteKeys) *remoteKeys {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.byKey[key]; ok {
		return k
	}
	k := create()
	c.byKey[key] = k
	return k
}

// remoteKeys is a JWKS fetched from an HTTPS (or HTTP) URL
// (remote_jwks.http_uri) and cached for cache_duration. The first request
// waits for the first fetch, at most the fetch timeout; a request whose kid
// the keys do not hold causes a refetch (once per refetchUnknownKid) and
// waits for it likewise; expired keys are refreshed in the background while
// they keep being used; a failed fetch keeps the last good keys.
type remoteKeys struct {
	uri      string
	timeout  time.Duration
	cacheFor time.Duration
	client   *http.Client
	now      func() time.Time
	logger   *slog.Logger

	mu        sync.Mutex
	current   []jwk
	fetchedAt time.Time     // of current
	attempted time.Time     // the last fetch started
	inflight  chan struct{} // closed when the fetch in flight ends; nil: none
	lastErr   error
}

func (k *remoteKeys) keys(ctx context.Context, kid string) ([]jwk, error) {
	k.mu.Lock()
	now := k.now()
	current := k.current
	var wait chan struct{}
	switch {
	case current == nil:
		wait = k.startLocked(now)
	case !hasKid(current, kid) && now.Sub(k.attempted) >= refetchUnknownKid:
		wait = k.startLocked(now)
	case !hasKid(current, kid) && k.inflight != nil:
		wait = k.inflight
	case now.Sub(k.fetchedAt) >= k.cacheFor:
		k.startLocked(now) // refresh in the background; the stale keys serve meanwhile
	}
	k.mu.Unlock()
	if wait != nil {
		timer := time.NewTimer(k.timeout)
		select {
		case <-wait:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		k.mu.Lock()
		current = k.current
		err := k.lastErr
		k.mu.Unlock()
		if current == nil {
			if err == nil {
				err = errors.New("JWKS not fetched yet")
			}
			return nil, err
		}
	}
	return current, nil
}

// startLocked starts a fetch unless one is in flight; it returns the
// channel closed when the fetch ends.
func (k *remoteKeys) startLocked(now time.Time) chan struct{} {
	if k.inflight != nil {
		return k.inflight
	}
	done := make(chan struct{})
	k.inflight, k.attempted = done, now
	go func() {
		defer close(done)
		keys, err := k.fetch()
		k.mu.Lock()
		defer k.mu.Unlock()
		k.inflight = nil
		if err != nil {
			k.lastErr = err
			k.logger.Warn("JWKS fetch failed: the previous keys stay", "uri", k.uri, "error", err)
			return
		}
		k.current, k.fetchedAt, k.lastErr = keys, k.now(), nil
	}()
	return done
}

func (k *remoteKeys) fetch() ([]jwk, error) {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.uri, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", k.uri, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", k.uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS %s: status %d", k.uri, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", k.uri, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS %s: larger than %d bytes", k.uri, maxJWKSBytes)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.uri, err)
	}
	return keys, nil
}
