package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// AnnotationDevJWTProvider on a SecurityPolicy names one of its JWT
// providers that `meshgate dev` verifies with a key of its own: dev points
// the provider's JWKS at the public JWKS it keeps in its state directory
// (localJWKS.file) and prints a curl command with a token it signed.
// Outside dev the annotation does nothing: the provider keeps the JWKS
// the policy gives it.
const AnnotationDevJWTProvider = "meshgate.dev/dev-jwt-provider"

// Files of dev's JWT signing key in its state directory.
const (
	devJWTKeyFile  = "dev-jwt.key"   // the ES256 private key, PKCS #8 PEM, 0600
	devJWKSFile    = "dev-jwks.json" // its public JWKS, read by the proxies
	devJWTKeyID    = "meshgate-dev"
	devJWTSubject  = "demo-user"
	devJWTScope    = "quickstart:read"
	devJWTValidFor = 24 * time.Hour
)

// devJWT is dev's JWT signing key and the token it signed at start.
type devJWT struct {
	jwksFile string
	// token is signed for the first annotated provider: its issuer and
	// first audience, sub devJWTSubject, scope devJWTScope.
	token string
	// path is where a route of the first annotated policy matches ("/"
	// when unknown): the banner's curl goes there.
	path string
	// expires is the token's exp.
	expires time.Time
}

// devJWTProvider is a provider a SecurityPolicy names by
// AnnotationDevJWTProvider.
type devJWTProvider struct {
	policy   *policy.SecurityPolicy
	provider *policy.JWTProvider
}

// devJWTProviders are the annotated providers of set, in the set's order
// of policies. A name that is not a provider of its policy is an error.
func devJWTProviders(set *policy.Set) ([]devJWTProvider, error) {
	var out []devJWTProvider
	var errs []error
	for _, sp := range set.SecurityPolicies {
		name, ok := sp.Annotations[AnnotationDevJWTProvider]
		if !ok {
			continue
		}
		i := -1
		if sp.Spec.JWT != nil {
			i = slices.IndexFunc(sp.Spec.JWT.Providers, func(p policy.JWTProvider) bool { return p.Name == name })
		}
		if i < 0 {
			errs = append(errs, fmt.Errorf("securitypolicy %s: annotation %s: %q is not one of its jwt providers", sp.Name, AnnotationDevJWTProvider, name))
			continue
		}
		out = append(out, devJWTProvider{policy: sp, provider: &sp.Spec.JWT.Providers[i]})
	}
	return out, errors.Join(errs...)
}

// ensureDevJWT returns dev's JWT key in dir, generating it (and dir) when
// it is missing or unreadable: the first run makes it, later runs reuse
// it. It (re)writes the public JWKS file next to it and signs a token for
// the first of providers, valid devJWTValidFor from now.
func ensureDevJWT(dir string, set *policy.Set, providers []devJWTProvider, now time.Time) (*devJWT, error) {
	key, err := loadOrCreateDevJWTKey(filepath.Join(dir, devJWTKeyFile))
	if err != nil {
		return nil, err
	}
	jwks, err := devJWKS(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	jwksPath := filepath.Join(dir, devJWKSFile)
	if old, err := os.ReadFile(jwksPath); err != nil || !bytes.Equal(old, jwks) {
		// Only when it changed: the proxies read the file again when it does.
		if err := writeFileAtomic(jwksPath, jwks, 0o644); err != nil {
			return nil, fmt.Errorf("dev JWKS: %w", err)
		}
	}
	out := &devJWT{jwksFile: jwksPath, path: "/", expires: now.Add(devJWTValidFor)}
	if len(providers) == 0 {
		return out, nil
	}
	first := providers[0]
	claims := jwt.MapClaims{
		"sub": devJWTSubject, "scope": devJWTScope,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": out.expires.Unix(),
	}
	if first.provider.Issuer != "" {
		claims["iss"] = first.provider.Issuer
	}
	if len(first.provider.Audiences) > 0 {
		claims["aud"] = first.provider.Audiences[0]
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = devJWTKeyID
	if out.token, err = tok.SignedString(key); err != nil {
		return nil, fmt.Errorf("dev JWT: %w", err)
	}
	out.path = devRoutePath(set, first.policy)
	return out, nil
}

// loadOrCreateDevJWTKey reads the ES256 key at path, or makes one there.
func loadOrCreateDevJWTKey(path string) (*ecdsa.PrivateKey, error) {
	if data, err := os.ReadFile(path); err == nil {
		if block, _ := pem.Decode(data); block != nil {
			if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
				if ec, ok := k.(*ecdsa.PrivateKey); ok && ec.Curve == elliptic.P256() {
					return ec, nil
				}
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev JWT key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dev JWT key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("dev JWT key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("dev JWT key: %w", err)
	}
	return key, nil
}

// devJWKS is the public JWKS of key (one P-256 key, kid devJWTKeyID).
func devJWKS(pub *ecdsa.PublicKey) ([]byte, error) {
	point, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("dev JWKS: %w", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	doc, err := json.MarshalIndent(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": devJWTKeyID,
		"x": b64(point[1:33]), "y": b64(point[33:65]),
	}}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dev JWKS: %w", err)
	}
	return append(doc, '\n'), nil
}

// devRoutePath is the path of the first match of the first HTTPRoute sp
// targets, "/" when it has none.
func devRoutePath(set *policy.Set, sp *policy.SecurityPolicy) string {
	for _, ref := range sp.Spec.TargetRefs {
		if ref.Kind != policy.KindHTTPRoute {
			continue
		}
		for _, r := range set.HTTPRoutes {
			if r.Name != ref.Name || orDefaultNS(r.Namespace) != orDefaultNS(sp.Namespace) {
				continue
			}
			for _, rule := range r.Spec.Rules {
				for _, m := range rule.Matches {
					if m.Path != nil && m.Path.Value != nil && (m.Path.Type == nil || *m.Path.Type != gwapiv1.PathMatchRegularExpression) {
						return *m.Path.Value
					}
				}
			}
		}
	}
	return "/"
}

func orDefaultNS(ns string) string {
	if ns == "" {
		return policy.DefaultNamespace
	}
	return ns
}

// withDevJWT returns evaluate with the annotated providers of every
// evaluation verifying with dev's key (devJWTSet), as withDevHTTPS adds
// the HTTPS listeners.
func withDevJWT(evaluate func(policy.Input) *policy.Result, jwksFile string) func(policy.Input) *policy.Result {
	return func(in policy.Input) *policy.Result {
		r := evaluate(in)
		if r == nil || r.Set == nil {
			return r
		}
		out := *r
		out.Set = devJWTSet(r.Set, jwksFile)
		return &out
	}
}

// devJWTSet returns set with the JWKS of every provider named by an
// AnnotationDevJWTProvider replaced by localJWKS {file: jwksFile}. The set
// and the policies it changes are copied, not modified (a policy cache
// shares them).
func devJWTSet(set *policy.Set, jwksFile string) *policy.Set {
	var policies []*policy.SecurityPolicy
	for i, sp := range set.SecurityPolicies {
		name, ok := sp.Annotations[AnnotationDevJWTProvider]
		if !ok || sp.Spec.JWT == nil {
			continue
		}
		k := slices.IndexFunc(sp.Spec.JWT.Providers, func(p policy.JWTProvider) bool { return p.Name == name })
		if k < 0 {
			continue
		}
		if policies == nil {
			policies = slices.Clone(set.SecurityPolicies)
		}
		copied := *sp
		jwtCopy := *sp.Spec.JWT
		jwtCopy.Providers = slices.Clone(sp.Spec.JWT.Providers)
		jwtCopy.Providers[k].RemoteJWKS = nil
		jwtCopy.Providers[k].LocalJWKS = &policy.LocalJWKS{File: jwksFile}
		copied.Spec.JWT = &jwtCopy
		policies[i] = &copied
	}
	if policies == nil {
		return set
	}
	out := *set
	out.SecurityPolicies = policies
	return &out
}

// printDevJWT prints how to call the route of the annotated policy with
// dev's token, and without it.
func printDevJWT(out io.Writer, j *devJWT, urls []string) {
	if j == nil || j.token == "" || len(urls) == 0 {
		return
	}
	gw := urls[0]
	fmt.Fprintf(out, `JWT (apigateway.yaml; dev signs with its ES256 key, kept in %s; the proxies read %s):
  curl -i %s%s          # 401: the route needs a token
  curl -H 'Authorization: Bearer %s' %s%s   # 200 as %s (scope %s; the token is valid until %s)

`, filepath.Dir(j.jwksFile), j.jwksFile, gw, j.path, j.token, gw, j.path, devJWTSubject, devJWTScope, j.expires.UTC().Format(time.RFC3339))
}
