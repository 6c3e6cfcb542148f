package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshgate/meshgate/policy"
)

const devJWTPolicyYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: jwt}
spec:
  rules:
    - matches: [{path: {type: PathPrefix, value: /jwt}}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata:
  name: jwt-demo
  annotations: {meshgate.dev/dev-jwt-provider: dev}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: jwt}]
  jwt:
    providers:
      - name: other
        localJWKS: {inline: '{"keys":[]}'}
      - name: dev
        issuer: meshgate-dev
        audiences: [quickstart]
        remoteJWKS: {uri: https://idp.example.com/jwks.json}
`

func loadDevJWTSet(t *testing.T, yaml string) *policy.Set {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := policy.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestDevJWT: the first run makes the key, later runs reuse it; the
// token verifies with the JWKS file, carries the provider's issuer and
// audience; the annotated provider (only) reads that file.
func TestDevJWT(t *testing.T) {
	t.Parallel()
	set := loadDevJWTSet(t, devJWTPolicyYAML)
	providers, err := devJWTProviders(set)
	if err != nil || len(providers) != 1 || providers[0].provider.Name != "dev" {
		t.Fatalf("devJWTProviders = %v, %v", providers, err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	now := time.Now()
	first, err := ensureDevJWT(dir, set, providers, now)
	if err != nil {
		t.Fatal(err)
	}
	jwks1, err := os.ReadFile(first.jwksFile)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, devJWTKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v, want mode 0600", st, err)
	}
	second, err := ensureDevJWT(dir, set, providers, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	jwks2, _ := os.ReadFile(second.jwksFile)
	if !bytes.Equal(jwks1, jwks2) {
		t.Errorf("a second run changed the JWKS:\n%s\n%s", jwks1, jwks2)
	}
	if first.path != "/jwt" {
		t.Errorf("path %q, want /jwt", first.path)
	}

	// The token verifies with the key of the JWKS file.
	pub := jwksKey(t, jwks1)
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(second.token, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer("meshgate-dev"), jwt.WithAudience("quickstart"),
		jwt.WithTimeFunc(func() time.Time { return now.Add(time.Hour) })); err != nil {
		t.Fatalf("dev's token does not verify with its JWKS: %v", err)
	}
	if claims["sub"] != devJWTSubject || claims["scope"] != devJWTScope {
		t.Errorf("claims %v", claims)
	}
	if exp, _ := claims.GetExpirationTime(); exp == nil || !exp.Equal(now.Add(time.Hour+devJWTValidFor).Truncate(time.Second)) {
		t.Errorf("exp %v, want %v", exp, now.Add(time.Hour+devJWTValidFor))
	}

	// The set's annotated provider reads the file; the other provider, and
	// the set given, are unchanged.
	out := devJWTSet(set, first.jwksFile)
	got := out.SecurityPolicies[0].Spec.JWT.Providers
	if got[1].RemoteJWKS != nil || got[1].LocalJWKS == nil || got[1].LocalJWKS.File != first.jwksFile {
		t.Errorf("provider dev: %+v %+v", got[1].RemoteJWKS, got[1].LocalJWKS)
	}
	if got[0].LocalJWKS.Inline != `{"keys":[]}` {
		t.Errorf("provider other changed: %+v", got[0].LocalJWKS)
	}
	if orig := set.SecurityPolicies[0].Spec.JWT.Providers[1]; orig.RemoteJWKS == nil || orig.LocalJWKS != nil {
		t.Errorf("devJWTSet modified the set it was given: %+v", orig)
	}

	var banner strings.Builder
	printDevJWT(&banner, second, []string{"http://127.0.0.1:8080"})
	for _, want := range []string{"curl -i http://127.0.0.1:8080/jwt ", "curl -H 'Authorization: Bearer " + second.token + "' http://127.0.0.1:8080/jwt "} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
		}
	}
}

// TestDevJWTUnknownProvider: an annotation naming no provider of its
// policy is an error naming both.
func TestDevJWTUnknownProvider(t *testing.T) {
	t.Parallel()
	set := loadDevJWTSet(t, strings.Replace(devJWTPolicyYAML, "dev-jwt-provider: dev", "dev-jwt-provider: nope", 1))
	_, err := devJWTProviders(set)
	if err == nil || !strings.Contains(err.Error(), "jwt-demo") || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("err = %v, want one naming the policy and the provider", err)
	}
}

// jwksKey is the one P-256 key of a JWKS.
func jwksKey(t *testing.T, data []byte) *ecdsa.PublicKey {
	t.Helper()
	var doc struct {
		Keys []struct{ Crv, X, Y string } `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil || len(doc.Keys) != 1 || doc.Keys[0].Crv != "P-256" {
		t.Fatalf("JWKS %s: %v", data, err)
	}
	x, err1 := base64.RawURLEncoding.DecodeString(doc.Keys[0].X)
	y, err2 := base64.RawURLEncoding.DecodeString(doc.Keys[0].Y)
	if err1 != nil || err2 != nil {
		t.Fatalf("JWKS coordinates: %v %v", err1, err2)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
	if err != nil {
		t.Fatalf("JWKS key: %v", err)
	}
	return pub
}
