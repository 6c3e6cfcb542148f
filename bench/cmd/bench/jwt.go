package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// wlJWT is the section of the cost of JWT validation.
const wlJWT = "(j) JWT validation cost: meshgate gateway, tiny body, max rate (wrk, every request with the same valid ES256 bearer token), a SecurityPolicy jwt vs none, one gateway, same run"

// jwtPolicyFile is the SecurityPolicy of the JWT rows, in the data-plane
// policy directory while they run.
const jwtPolicyFile = "jwt.yaml"

// Claims of the bench's token.
const (
	benchJWTIssuer   = "https://bench.meshgate.invalid"
	benchJWTAudience = "bench"
	benchJWTKeyID    = "bench-es256"
)

// benchJWT is the signing key of a bench run: its public JWKS and a token
// it signed.
type benchJWT struct {
	jwks  string // {"keys": [...]}, the public key only
	token string
}

// newBenchJWT generates an ES256 key and signs a token with it, valid for
// validFor (the whole run).
func newBenchJWT(now time.Time, validFor time.Duration) (*benchJWT, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("jwt key: %w", err)
	}
	point, err := key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("jwt key: %w", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": benchJWTKeyID,
		"x": b64(point[1:33]), "y": b64(point[33:65]),
	}}})
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": benchJWTIssuer, "aud": benchJWTAudience, "sub": "bench-user", "scope": "bench:read",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(validFor).Unix(),
	})
	tok.Header["kid"] = benchJWTKeyID
	signed, err := tok.SignedString(key)
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	return &benchJWT{jwks: string(jwks), token: signed}, nil
}

// policy is the SecurityPolicy requiring a token of the key on the
// bench's route, the JWKS inline.
func (b *benchJWT) policy() string {
	return fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: bench-jwt}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: bench}]
  jwt:
    providers:
      - name: bench
        issuer: %s
        audiences: [%s]
        localJWKS:
          inline: '%s'
`, benchJWTIssuer, benchJWTAudience, b.jwks)
}

// jwtValidation runs workload (j): one meshgate gateway measured without
// a SecurityPolicy, then with one requiring a JWT on the bench route,
// then both again; the policy changes over xDS between the rows. Every
// request carries the same valid token, in the rows without the policy
// too.
func (r *runner) jwtValidation(ctx context.Context, env *meshgateEnv) error {
	b, err := newBenchJWT(time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	return r.measureOnOff(ctx, env, onOffPolicy{
		workload: wlJWT, file: jwtPolicyFile, policy: b.policy(),
		off: "no JWT", on: "JWT validation (ES256)",
		served: servesJWT, what: "JWT authentication",
		headers: []string{"Authorization: Bearer " + b.token},
		note: "One gateway process, the SecurityPolicy (jwt: one provider, an ES256 key in an inline JWKS, issuer and audience checked) " +
			"added and removed over xDS between the rows (no restart), each row run twice, alternating: the spread between a row's two runs is the noise. " +
			"wrk sends the same valid token with every request, in the rows without the policy too. The proxy caches a verified token for a minute " +
			"(at most until its exp): the first request of a row verifies the ES256 signature, the others find the token in the cache, so the rows " +
			"measure that steady state (extracting the token, the cache lookup, the claims put in the request's metadata, the token removed from the " +
			"request sent on), not one signature verification per request.",
	})
}

// servesJWT reports whether the gateway's /config_dump has the JWT
// authentication filter.
func servesJWT(ctx context.Context, admin string) (bool, error) {
	body, err := configDump(ctx, admin)
	if err != nil {
		return false, err
	}
	return strings.Contains(body, "jwt_authn"), nil
}
