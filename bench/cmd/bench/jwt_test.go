package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshgate/meshgate/policy"
)

// TestBenchJWT: the bench's token verifies with the key of its JWKS, with
// the policy's issuer and audience, and the policy is valid next to the
// bench's own (its route exists).
func TestBenchJWT(t *testing.T) {
	t.Parallel()
	now := time.Now()
	b, err := newBenchJWT(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []struct{ Kid, X, Y string } `json:"keys"`
	}
	if err := json.Unmarshal([]byte(b.jwks), &doc); err != nil || len(doc.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", b.jwks, err)
	}
	x, _ := base64.RawURLEncoding.DecodeString(doc.Keys[0].X)
	y, _ := base64.RawURLEncoding.DecodeString(doc.Keys[0].Y)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
	if err != nil {
		t.Fatalf("JWKS key: %v", err)
	}
	tok, err := jwt.Parse(b.token, func(tok *jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(benchJWTIssuer), jwt.WithAudience(benchJWTAudience))
	if err != nil {
		t.Fatalf("the bench's token does not verify: %v", err)
	}
	if tok.Header["kid"] != doc.Keys[0].Kid {
		t.Errorf("token kid %v, JWKS kid %q", tok.Header["kid"], doc.Keys[0].Kid)
	}
	base := meshgatePolicy("127.0.0.1:8080", "127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002", false)
	set, err := policy.LoadFiles(policy.File{Name: "/bench/bench.yaml", Data: []byte(base)},
		policy.File{Name: "/bench/" + jwtPolicyFile, Data: []byte(b.policy())})
	if err != nil {
		t.Fatalf("the JWT policy does not load: %v\n%s", err, b.policy())
	}
	if len(set.SecurityPolicies) != 1 || set.SecurityPolicies[0].Spec.JWT == nil ||
		!strings.Contains(set.SecurityPolicies[0].Spec.JWT.Providers[0].LocalJWKS.Inline, doc.Keys[0].X) {
		t.Errorf("policy = %+v", set.SecurityPolicies)
	}
}
