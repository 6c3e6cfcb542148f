package jwtauthn

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// FuzzVerify: no JWKS document and no token makes the filter panic, and
// no token that the test did not sign with the JWKS' key is accepted.
func FuzzVerify(f *testing.F) {
	key := newRSAKey(f, "k1")
	good := key.sign(f, claimsAt(testNow, nil))
	jwks := jwksOf(key.jwk())
	f.Add(jwks, good)
	f.Add(jwks, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`, "a.b.c")
	f.Add(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, good)
	f.Fuzz(func(t *testing.T, doc, token string) {
		if _, err := parseJWKS([]byte(doc)); err != nil {
			doc = jwks
		}
		c, err := compile(requireAll("p", inline(doc)), options{now: func() time.Time { return testNow }, logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return
		}
		fl := &filter{name: "jwt", cfg: c, denied: new(httpfilter.Stats).Counters(StatDenied), logger: slog.New(slog.DiscardHandler)}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		ok := false
		fl.Wrap(httpfilter.HandlerFunc(func(_ http.ResponseWriter, _ *http.Request, _ *router.Route) { ok = true })).ServeHTTP(w, r, nil)
		if ok && doc == jwks && token != good {
			// Accepted: it must verify with the test's key (a re-encoding
			// of the good token, say), never be unsigned or HMAC.
			if _, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return &key.priv.PublicKey, nil },
				jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return testNow })); err != nil {
				t.Fatalf("accepted a token the key did not sign: %q: %v", token, err)
			}
		}
	})
}
