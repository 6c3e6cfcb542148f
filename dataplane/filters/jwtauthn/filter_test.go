package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// testKey is an RSA signing key and its JWK.
type testKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newRSAKey(t testing.TB, kid string) testKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, priv: k}
}

func (k testKey) jwk() map[string]any {
	return map[string]any{"kty": "RSA", "kid": k.kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(k.priv.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString([]byte{1, 0, 1})}
}

func jwksOf(keys ...map[string]any) string {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return string(b)
}

func (k testKey) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noneToken is an unsigned token (alg none) with claims.
func noneToken(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hmacWithPublicKey is the key-confusion attack: an HS256 token whose HMAC
// key is the PEM of the RSA public key.
func hmacWithPublicKey(t testing.TB, k testKey, claims jwt.MapClaims) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	testIssuer   = "https://idp.test"
	testAudience = "orders"
)

var testNow = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func claimsAt(now time.Time, extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"iss": testIssuer, "aud": []string{testAudience}, "sub": "alice",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "orders:read orders:write"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func withClaims(jwks *jwtv3.JwtProvider) *jwtv3.JwtProvider {
	jwks.Issuer = testIssuer
	jwks.Audiences = []string{testAudience}
	jwks.PayloadInMetadata = "jwt_payload"
	jwks.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{{HeaderName: "x-user", ClaimName: "sub"}}
	jwks.NormalizePayloadInMetadata = &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"scope"}}
	return jwks
}

func inline(jwks string) *jwtv3.JwtProvider {
	return withClaims(&jwtv3.JwtProvider{JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{
		LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}})
}

func requireAll(name string, p *jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{name: p},
		Rules: []*jwtv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}},
		}},
	}
}

// served runs the filter compiled from cfg (its clock at now, remote JWKS
// fetched with client) in front of a handler recording the request.
type served struct {
	h    httpfilter.Handler
	cfg  *config
	seen atomic.Pointer[http.Request]
}

func (s *served) provider(name string) *provider { return s.cfg.providers[name] }

func serve(t testing.TB, cfg *jwtv3.JwtAuthentication, now func() time.Time, client *http.Client) *served {
	t.Helper()
	c, err := compile(cfg, options{now: now, client: client, logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	s := &served{cfg: c}
	f := &filter{name: "jwt", cfg: c, denied: new(httpfilter.Stats).Counters(StatDenied), logger: slog.New(slog.DiscardHandler)}
	s.h = f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
		s.seen.Store(r)
		w.WriteHeader(http.StatusOK)
	}))
	return s
}

func (s *served) do(target string, header http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, r, nil)
	return w
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestVerify: the token matrix, with an inline JWKS of an RSA key.
func TestVerify(t *testing.T) {
	t.Parallel()
	key, other := newRSAKey(t, "k1"), newRSAKey(t, "k1")
	s := serve(t, requireAll("corp", inline(jwksOf(key.jwk()))), func() time.Time { return testNow }, nil)
	ok := claimsAt(testNow, nil)
	cases := []struct {
		name   string
		header http.Header
		target string
		want   int
		error  bool // WWW-Authenticate has error="invalid_token"
	}{
		{"valid", bearer(key.sign(t, ok)), "/", 200, false},
		{"valid in access_token", nil, "/?access_token=" + key.sign(t, ok), 200, false},
		{"missing", nil, "/", 401, false},
		{"not bearer", http.Header{"Authorization": {"Basic YTpi"}}, "/", 401, false},
		{"expired", bearer(key.sign(t, claimsAt(testNow.Add(-3*time.Hour), nil))), "/", 401, true},
		{"expired within the skew", bearer(key.sign(t, claimsAt(testNow, jwt.MapClaims{"exp": testNow.Add(-30 * time.Second).Unix()}))), "/", 200, false},
		{"not yet valid", bearer(key.sign(t, claimsAt(testNow, jwt.MapClaims{"nbf": testNow.Add(time.Hour).Unix()}))), "/", 401, true},
		{"wrong issuer", bearer(key.sign(t, claimsAt(testNow, jwt.MapClaims{"iss": "https://evil.test"}))), "/", 401, true},
		{"wrong audience", bearer(key.sign(t, claimsAt(testNow, jwt.MapClaims{"aud": []string{"billing"}}))), "/", 401, true},
		{"bad signature", bearer(other.sign(t, ok)), "/", 401, true},
		{"alg none", bearer(noneToken(t, ok)), "/", 401, true},
		{"HS256 signed with the RSA public key", bearer(hmacWithPublicKey(t, key, ok)), "/", 401, true},
		{"garbage", bearer("a.b.c"), "/", 401, true},
	}
	for _, tc := range cases {
		w := s.do(tc.target, tc.header)
		if w.Code != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, w.Code, tc.want, w.Body)
			continue
		}
		if tc.want != 401 {
			continue
		}
		challenge := w.Header().Get("WWW-Authenticate")
		if !strings.HasPrefix(challenge, `Bearer realm="http://example.com/`) {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, challenge)
		}
		if got := strings.Contains(challenge, `error="invalid_token"`); got != tc.error {
			t.Errorf("%s: WWW-Authenticate %q: invalid_token %v, want %v", tc.name, challenge, got, tc.error)
		}
	}
}

// TestAuthenticated: a verified token is the request's principal, its
// claims reach the backend as headers (a forged one is replaced), the
// token is removed, and the payload is in the metadata with scope a list.
func TestAuthenticated(t *testing.T) {
	t.Parallel()
	key := newRSAKey(t, "k1")
	s := serve(t, requireAll("corp", inline(jwksOf(key.jwk()))), func() time.Time { return testNow }, nil)
	h := bearer(key.sign(t, claimsAt(testNow, nil)))
	h.Set("X-User", "mallory")
	if w := s.do("/", h); w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	r := s.seen.Load()
	if got := r.Header.Get("X-User"); got != "alice" {
		t.Errorf("X-User = %q, want alice", got)
	}
	if got := r.Header.Get("Authorization"); got != "" {
		t.Errorf("Authorization forwarded: %q", got)
	}
	a := httpfilter.AuthFrom(r.Context())
	if a == nil || a.Principal != "alice" || httpfilter.Principal(r.Context()) != "alice" || a.Kind != httpfilter.AuthJWT {
		t.Fatalf("auth = %+v", a)
	}
	if a.MetadataNamespace != MetadataNamespace || a.MetadataKey != "jwt_payload" {
		t.Errorf("metadata at %s:%s", a.MetadataNamespace, a.MetadataKey)
	}
	if scope, ok := a.Metadata["scope"].([]any); !ok || len(scope) != 2 || scope[1] != "orders:write" {
		t.Errorf("metadata scope = %#v, want a list", a.Metadata["scope"])
	}
}

// jwksServer serves a JWKS that can be replaced or made to fail, counting
// fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[string]
	down    atomic.Bool
	fetches atomic.Int64
}

func newJWKSServer(t testing.TB, jwks string) *jwksServer {
	s := &jwksServer{}
	s.body.Store(&jwks)
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, *s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func remote(uri string, cacheFor time.Duration) *jwtv3.JwtProvider {
	return withClaims(&jwtv3.JwtProvider{JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
		HttpUri:       &corev3.HttpUri{Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "jwks"}, Timeout: durationpb.New(10 * time.Second)},
		CacheDuration: durationpb.New(cacheFor),
	}}})
}

// TestRemoteJWKS: keys are fetched on first use; a token of a new kid makes
// the proxy fetch again (rotation); a JWKS server that fails keeps the last
// good keys; expired keys are refreshed.
func TestRemoteJWKS(t *testing.T) {
	t.Parallel()
	k1, k2 := newRSAKey(t, "k1"), newRSAKey(t, "k2")
	srv := newJWKSServer(t, jwksOf(k1.jwk()))
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	s := serve(t, requireAll("corp", remote(srv.URL+"/jwks", time.Minute)), now, srv.Client())

	if w := s.do("/", bearer(k1.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("first request: %d %s", w.Code, w.Body)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	s.do("/", bearer(k1.sign(t, claimsAt(testNow, nil))))
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("cached keys fetched again: %d fetches", n)
	}

	// Rotation: the server now publishes k2; a k2 token is verified after
	// a refetch (the unknown kid), once refetchUnknownKid has passed.
	rotated := jwksOf(k2.jwk())
	srv.body.Store(&rotated)
	clock.Add(int64(2 * refetchUnknownKid))
	if w := s.do("/", bearer(k2.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("rotated kid: %d %s", w.Code, w.Body)
	}

	// The server goes down; the cache expires; requests keep being
	// verified with the stale keys.
	srv.down.Store(true)
	before := srv.fetches.Load()
	clock.Add(int64(2 * time.Minute))
	for range 3 {
		if w := s.do("/", bearer(k2.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
			t.Fatalf("stale keys not kept: %d %s", w.Code, w.Body)
		}
	}
	// An unknown kid while the server is down: 401, the stale keys kept.
	clock.Add(int64(2 * refetchUnknownKid))
	if w := s.do("/", bearer(k1.sign(t, claimsAt(testNow, nil)))); w.Code != 401 {
		t.Fatalf("retired kid: %d", w.Code)
	}
	if srv.fetches.Load() == before {
		t.Errorf("no refetch attempted after the cache expired")
	}
	if w := s.do("/", bearer(k2.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("stale keys lost after a failed fetch: %d %s", w.Code, w.Body)
	}
}

// TestRemoteJWKSDownAtStart: without keys, a request waits for the first
// fetch at most the timeout and gets 401.
func TestRemoteJWKSDownAtStart(t *testing.T) {
	t.Parallel()
	k1 := newRSAKey(t, "k1")
	srv := newJWKSServer(t, jwksOf(k1.jwk()))
	srv.down.Store(true)
	s := serve(t, requireAll("corp", remote(srv.URL, time.Minute)), func() time.Time { return testNow }, srv.Client())
	if w := s.do("/", bearer(k1.sign(t, claimsAt(testNow, nil)))); w.Code != 401 {
		t.Fatalf("status %d, want 401", w.Code)
	}
}

// TestECAndAlgorithmAllowList: an EC P-256 key verifies ES256 only.
func TestECAndAlgorithmAllowList(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := map[string]any{"kty": "EC", "crv": "P-256", "kid": "e1",
		"x": base64.RawURLEncoding.EncodeToString(ec.X.FillBytes(make([]byte, 32))),
		"y": base64.RawURLEncoding.EncodeToString(ec.Y.FillBytes(make([]byte, 32)))}
	s := serve(t, requireAll("corp", inline(jwksOf(jwk))), func() time.Time { return testNow }, nil)
	sign := func(m jwt.SigningMethod, key any) string {
		tok := jwt.NewWithClaims(m, claimsAt(testNow, nil))
		tok.Header["kid"] = "e1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if w := s.do("/", bearer(sign(jwt.SigningMethodES256, ec))); w.Code != 200 {
		t.Errorf("ES256: %d %s", w.Code, w.Body)
	}
	if w := s.do("/", bearer(sign(jwt.SigningMethodHS256, []byte("x")))); w.Code != 401 {
		t.Errorf("HS256: %d", w.Code)
	}
}

// TestParseJWKS refuses what cannot verify safely.
func TestParseJWKS(t *testing.T) {
	t.Parallel()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, jwks, want string }{
		{"not JSON", "{", "JWKS"},
		{"no keys", `{"keys":[]}`, "no keys"},
		{"symmetric", `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, "kty \"oct\" not supported"},
		{"short RSA", jwksOf(testKey{kid: "s", priv: small}.jwk()), "2048 bits"},
		{"bad curve", `{"keys":[{"kty":"EC","crv":"P-192","x":"AA","y":"AA"}]}`, "P-192"},
	} {
		if _, err := parseJWKS([]byte(tc.jwks)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestFileJWKS: a local_jwks filename is read again when it changes (looked
// at once per fileCheckEvery); an invalid new version keeps the keys.
func TestFileJWKS(t *testing.T) {
	t.Parallel()
	k1, k2 := newRSAKey(t, "k1"), newRSAKey(t, "k2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, []byte(jwksOf(k1.jwk())), 0o644); err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	p := withClaims(&jwtv3.JwtProvider{JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{
		LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}}})
	s := serve(t, requireAll("corp", p), now, nil)
	if w := s.do("/", bearer(k1.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("k1: %d %s", w.Code, w.Body)
	}
	if err := os.WriteFile(path, []byte(jwksOf(k2.jwk())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(fileCheckEvery))
	if w := s.do("/", bearer(k2.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("k2 after the file changed: %d %s", w.Code, w.Body)
	}
	if err := os.WriteFile(path, []byte("not JSON at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(fileCheckEvery))
	if w := s.do("/", bearer(k2.sign(t, claimsAt(testNow, nil)))); w.Code != 200 {
		t.Fatalf("k2 after an invalid version: %d %s", w.Code, w.Body)
	}
}

// TestRemoteJWKSSharedAcrossConfigs: a filter compiled again (a new
// listener configuration) keeps the keys its factory fetched: no new fetch,
// and a JWKS server that is down by then does not matter.
func TestRemoteJWKSSharedAcrossConfigs(t *testing.T) {
	t.Parallel()
	k1 := newRSAKey(t, "k1")
	var fetches atomic.Int64
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, jwksOf(k1.jwk()))
	}))
	t.Cleanup(srv.Close)
	factory := Factory()
	cfg := requireAll("corp", remote(srv.URL, time.Hour))
	tok := k1.sign(t, claimsAt(time.Now(), nil))
	for i := range 2 {
		f, err := factory.New("jwt", cfg, httpfilter.Env{Stats: new(httpfilter.Stats)})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) { w.WriteHeader(200) })).ServeHTTP(w, r, nil)
		if w.Code != 200 {
			t.Fatalf("config %d: status %d %s", i, w.Code, w.Body)
		}
		down.Store(true)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// BenchmarkVerify is the cost of one request with a valid RS256 token
// (extraction, signature, claims, the authentication on the context).
func BenchmarkVerify(b *testing.B) {
	key := newRSAKey(b, "k1")
	s := serve(b, requireAll("corp", inline(jwksOf(key.jwk()))), func() time.Time { return testNow }, nil)
	h := bearer(key.sign(b, claimsAt(testNow, nil)))
	b.ReportAllocs()
	for b.Loop() {
		if w := s.do("/", h); w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// TestOptionalStripsClaimHeaders: with allow_missing, a request without a
// token passes unauthenticated, and a claim header the client sent does
// not reach the backend.
func TestOptionalStripsClaimHeaders(t *testing.T) {
	t.Parallel()
	key := newRSAKey(t, "k1")
	cfg := requireAll("corp", inline(jwksOf(key.jwk())))
	cfg.Rules[0].RequirementType = &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
		RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
			{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "corp"}},
			{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
		}}}}}
	s := serve(t, cfg, func() time.Time { return testNow }, nil)
	if w := s.do("/", http.Header{"X-User": {"admin"}}); w.Code != 200 {
		t.Fatalf("no token: %d", w.Code)
	}
	r := s.seen.Load()
	if got := r.Header.Get("X-User"); got != "" || httpfilter.AuthFrom(r.Context()) != nil {
		t.Errorf("unauthenticated request: X-User %q, auth %v", got, httpfilter.AuthFrom(r.Context()))
	}
	if w := s.do("/", bearer(hmacWithPublicKey(t, key, claimsAt(testNow, nil)))); w.Code != 401 {
		t.Errorf("an invalid token with allow_missing: %d, want 401", w.Code)
	}
}

// TestTokenCache: a token verified once is accepted again without a
// signature check, until its exp (with the skew) or tokenCacheFor.
func TestTokenCache(t *testing.T) {
	t.Parallel()
	key := newRSAKey(t, "k1")
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	s := serve(t, requireAll("corp", inline(jwksOf(key.jwk()))), now, nil)
	p := s.provider("corp")
	short := key.sign(t, claimsAt(testNow, jwt.MapClaims{"exp": testNow.Add(10 * time.Second).Unix()}))
	long := key.sign(t, claimsAt(testNow, nil))
	for range 3 {
		if w := s.do("/", bearer(short)); w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
	}
	if n := p.verifications.Load(); n != 1 {
		t.Fatalf("%d verifications of one token, want 1", n)
	}
	s.do("/", bearer(long))
	if n := p.verifications.Load(); n != 2 {
		t.Fatalf("%d verifications of two tokens, want 2", n)
	}
	// Past exp and the skew (60s): the cached token is refused.
	clock.Add(int64(71 * time.Second))
	if w := s.do("/", bearer(short)); w.Code != 401 {
		t.Errorf("expired cached token: status %d", w.Code)
	}
	// Past tokenCacheFor: the long token is verified again.
	s.do("/", bearer(long))
	if n := p.verifications.Load(); n != 4 {
		t.Errorf("%d verifications, want 4 (both verified again)", n)
	}
}
