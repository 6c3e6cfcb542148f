package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtIssuer signs tokens with RSA keys and serves its JWKS over HTTPS, as
// an identity provider does; the JWKS can be rotated or taken down.
type jwtIssuer struct {
	srv  *httptest.Server
	jwks atomic.Pointer[string]
	down atomic.Bool
	// failedFetches counts the fetches answered while down.
	failedFetches atomic.Int64
	caFile        string // the server's certificate, for the proxies' trust roots
}

const (
	jwtIss = "https://idp.e2e.test"
	jwtAud = "shop"
)

func newJWTIssuer(t *testing.T, keys ...*jwtKey) *jwtIssuer {
	t.Helper()
	i := &jwtIssuer{}
	i.publish(keys...)
	i.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if i.down.Load() {
			i.failedFetches.Add(1)
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, *i.jwks.Load())
	}))
	t.Cleanup(i.srv.Close)
	i.caFile = filepath.Join(t.TempDir(), "jwks-ca.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.srv.Certificate().Raw})
	if err := os.WriteFile(i.caFile, pemCert, 0o644); err != nil {
		t.Fatal(err)
	}
	return i
}

func (i *jwtIssuer) publish(keys ...*jwtKey) {
	s := jwksJSON(keys...)
	i.jwks.Store(&s)
}

func jwksJSON(keys ...*jwtKey) string {
	list := make([]map[string]string, 0, len(keys))
	for _, k := range keys {
		list = append(list, map[string]string{"kty": "RSA", "kid": k.kid, "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(k.priv.N.Bytes()), "e": "AQAB"})
	}
	b, _ := json.Marshal(map[string]any{"keys": list})
	return string(b)
}

type jwtKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newJWTKey(t *testing.T, kid string) *jwtKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtKey{kid: kid, priv: k}
}

// claims are valid claims for sub, changed by extra (a nil value deletes).
func jwtClaims(sub string, extra jwt.MapClaims) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": jwtIss, "aud": jwtAud, "sub": sub, "iat": now.Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "orders:read"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func (k *jwtKey) sign(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwtStartEnv is start with more environment variables for the process.
func jwtStartEnv(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	args = withoutDrainDelay(args)
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- output of %s (%s)\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// jwtPolicy: the gateway edge routes to frontend and requires a token of
// the issuer (remote JWKS over HTTPS, refreshed every second), copies sub
// into X-User, declares the subject alice the consumer alice-app, and
// lets only tokens with the orders:write scope POST;
// orders' sidecar requires a token in X-Jwt verified with a JWKS file and
// denies the interns group.
func jwtPolicy(jwksURL, jwksFile, accessLog string) string {
	return yamlDocs(edgeGateway, `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: "`+accessLog+`"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: frontend, port: 80}]}]
`, meshServices("frontend", "orders"), `
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: edge-jwt}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  jwt:
    providers:
      - name: idp
        issuer: `+jwtIss+`
        audiences: [`+jwtAud+`]
        remoteJWKS: {uri: "`+jwksURL+`", cacheDuration: 1s, timeout: 3s}
        claimToHeaders: [{header: X-User, claim: sub}]
        consumers: [{name: alice-app, subject: alice}]
  rules:
    - name: read
      action: ALLOW
      to: [{methods: [GET]}]
    - name: write
      action: ALLOW
      from: [{claims: [{name: scope, values: ["orders:write"]}]}]
      to: [{methods: [POST]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders-jwt}
spec:
  targetRefs: [{kind: Service, name: orders}]
  jwt:
    providers:
      - name: idp
        issuer: `+jwtIss+`
        localJWKS: {file: "`+jwksFile+`"}
        extractFrom: {headers: [{name: X-Jwt}]}
  rules:
    - name: no-interns
      action: DENY
      from: [{claims: [{name: groups, values: [interns]}]}]
`)
}

// TestJWTAuthentication: tokens checked at a gateway (remote JWKS) and a
// sidecar (JWKS file), through the real binary: the validation matrix,
// claims to headers, a claim-based deny, key rotation and a JWKS server
// that goes down.
func TestJWTAuthentication(t *testing.T) {
	t.Parallel()
	k1 := newJWTKey(t, "k1")
	issuer := newJWTIssuer(t, k1)
	c := newCluster(t)
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, jwksFile, jwksJSON(k1))
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.policy("mesh.yaml", jwtPolicy(issuer.srv.URL+"/jwks", jwksFile, logFile))
	c.startControlPlane()
	for _, svc := range []string{"frontend", "orders"} {
		c.startInstance(c.sidecar, svc, svc, "v1")
	}
	admin := c.addr("gateway-admin-edge")
	jwtStartEnv(t, "gateway edge", []string{"SSL_CERT_FILE=" + issuer.caFile}, "gateway", "--name", "edge",
		"--xds", c.xds, "--admin", admin, "--token", c.token("edge"), "--log-level", "debug")
	c.waitReady(admin)
	gw := "http://" + c.addr("gw")
	bearer := func(tok string) string { return "Authorization: Bearer " + tok }

	good := k1.sign(t, jwtClaims("alice", nil))
	eventually(t, 20*time.Second, "the gateway serves a valid token", func() error {
		r, err := get(gw+"/items", bearer(good))
		if err != nil {
			return err
		}
		if r.status != 200 || r.reply.Service != "frontend" {
			return fmt.Errorf("status %d: %s", r.status, r.body)
		}
		if got := r.reply.Headers["x-user"]; got != "alice" {
			return fmt.Errorf("x-user %q, want alice", got)
		}
		if got := r.reply.Headers["authorization"]; got != "" {
			return fmt.Errorf("the token reached the backend: %q", got)
		}
		return nil
	})

	t.Run("principal in the access log", func(t *testing.T) {
		waitLines(t, logFile, 1, "the gateway's line of alice", func(l accessLine) bool {
			return l.str("principal") == "alice" && l.str("proxy") == "default/edge" && l.code() == 200
		})
	})

	t.Run("gateway matrix", func(t *testing.T) {
		other := newJWTKey(t, "k1") // same kid, another key: a bad signature
		none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwtClaims("alice", nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(&k1.priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		confused := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims("alice", nil))
		confused.Header["kid"] = "k1"
		hs256, err := confused.SignedString(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		if err != nil {
			t.Fatal(err)
		}
		hour := time.Hour
		for _, tc := range []struct {
			name   string
			method string
			header string
			want   int
		}{
			{"valid", "GET", bearer(good), 200},
			{"missing", "GET", "", 401},
			{"expired", "GET", bearer(k1.sign(t, jwtClaims("alice", jwt.MapClaims{"exp": time.Now().Add(-hour).Unix()}))), 401},
			{"not yet valid", "GET", bearer(k1.sign(t, jwtClaims("alice", jwt.MapClaims{"nbf": time.Now().Add(hour).Unix()}))), 401},
			{"wrong issuer", "GET", bearer(k1.sign(t, jwtClaims("alice", jwt.MapClaims{"iss": "https://evil.test"}))), 401},
			{"wrong audience", "GET", bearer(k1.sign(t, jwtClaims("alice", jwt.MapClaims{"aud": "billing"}))), 401},
			{"bad signature", "GET", bearer(other.sign(t, jwtClaims("alice", nil))), 401},
			{"alg none", "GET", bearer(none), 401},
			{"HS256 signed with the RSA public key", "GET", bearer(hs256), 401},
			{"POST without orders:write", "POST", bearer(good), 403},
			{"POST with orders:write", "POST", bearer(k1.sign(t, jwtClaims("bob", jwt.MapClaims{"scope": "orders:read orders:write"}))), 200},
		} {
			var headers []string
			if tc.header != "" {
				headers = append(headers, tc.header)
			}
			r, err := do(tc.method, gw+"/items", headers...)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if r.status != tc.want {
				t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.want, r.body)
			}
			if tc.want == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s: WWW-Authenticate %q", tc.name, r.header.Get("WWW-Authenticate"))
			}
		}
	})

	t.Run("requests by declared consumer in the metrics", func(t *testing.T) {
		families, err := scrapeMetrics(admin, "", acceptText)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, m := range families["meshgate_proxy_consumer_requests_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["kind"]+"/"+labels["consumer"]] = m.GetCounter().GetValue()
		}
		// alice's verified tokens (the first served, the matrix's valid
		// GET and denied POST); bob, no declared consumer, has no label.
		if got["jwt/alice-app"] < 3 || len(got) != 1 {
			t.Errorf("consumer requests = %v, want jwt/alice-app (at least 3) only", got)
		}
	})

	t.Run("sidecar", func(t *testing.T) {
		app := "http://" + c.addr("frontend-app")
		for _, tc := range []struct {
			name   string
			header []string
			want   int
		}{
			{"valid", []string{"X-Jwt: " + good}, 200},
			{"missing", nil, 401},
			{"expired", []string{"X-Jwt: " + k1.sign(t, jwtClaims("alice", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}))}, 401},
			{"claim-based deny", []string{"X-Jwt: " + k1.sign(t, jwtClaims("ivan", jwt.MapClaims{"groups": []string{"staff", "interns"}}))}, 403},
		} {
			eventually(t, 15*time.Second, "orders' sidecar: "+tc.name, func() error {
				code, err := jwtCallStatus(app, "orders", "/items", tc.header...)
				if err != nil {
					return err
				}
				if code != tc.want {
					return fmt.Errorf("status %d, want %d", code, tc.want)
				}
				return nil
			})
		}
	})

	t.Run("rotation and a JWKS server down", func(t *testing.T) {
		k2 := newJWTKey(t, "k2")
		issuer.publish(k1, k2)
		rotated := k2.sign(t, jwtClaims("carol", nil))
		eventually(t, 15*time.Second, "a token of the new kid accepted", func() error {
			r, err := get(gw+"/items", bearer(rotated))
			if err != nil {
				return err
			}
			if r.status != 200 {
				return fmt.Errorf("status %d: %s", r.status, r.body)
			}
			return nil
		})
		issuer.down.Store(true)
		// The cache (1s) expires, a request starts a fetch, which fails:
		// the keys fetched last keep verifying, before and after. Each
		// request has a new token (jti), which the proxy has not verified
		// yet: its keys are looked up.
		failed := issuer.failedFetches.Load()
		var refused []string
		jti := 0
		fresh := func() string {
			jti++
			return k2.sign(t, jwtClaims("carol", jwt.MapClaims{"jti": fmt.Sprint(jti)}))
		}
		eventually(t, 15*time.Second, "a JWKS fetch failed", func() error {
			r, err := get(gw+"/items", bearer(fresh()))
			if err != nil {
				return err
			}
			if r.status != 200 {
				refused = append(refused, fmt.Sprintf("%d %s", r.status, r.body))
			}
			if n := issuer.failedFetches.Load() - failed; n < 2 {
				return fmt.Errorf("%d failed fetches", n)
			}
			return nil
		})
		for range 3 {
			r, err := get(gw+"/items", bearer(fresh()))
			if err != nil {
				t.Fatal(err)
			}
			if r.status != 200 {
				refused = append(refused, fmt.Sprintf("%d %s", r.status, r.body))
			}
		}
		if len(refused) > 0 {
			t.Fatalf("with the JWKS server down, tokens refused: %v", refused)
		}
	})
}

// jwtCallStatus is callStatus (GET) with headers for the app to pass on.
func jwtCallStatus(app, svc, path string, headers ...string) (int, error) {
	r, err := get(app+"/call/"+svc+path, headers...)
	if err != nil {
		return 0, err
	}
	if r.status != http.StatusOK {
		return 0, fmt.Errorf("app answered %d: %s", r.status, r.body)
	}
	return r.reply.UpstreamStatus, nil
}
