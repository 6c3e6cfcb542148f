package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
)

// securityPolicy: orders (STRICT, with an authorization policy), legacy
// (PERMISSIVE), callers frontend and intruder, each behind a sidecar, the
// gateway edge in front; billing is misregistered: its endpoint is the
// intruder's sidecar, which holds a valid certificate, for intruder.
func securityPolicy() string {
	return yamlDocs(edgeGateway, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /legacy}}]
      backendRefs: [{name: legacy, port: 80}]
    - backendRefs: [{name: orders, port: 80}]
`, meshServices("frontend", "intruder", "orders", "legacy"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${intruder-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders-callers}
spec:
  targetRefs: [{kind: Service, name: orders}]
  rules:
    - name: no-admin
      action: DENY
      to: [{paths: ["/admin/*"]}]
    - name: frontend-rw
      action: ALLOW
      from: [{services: [frontend]}]
      to: [{methods: [GET, POST], paths: ["/orders", "/orders/*"]}]
    - name: intruder-read
      action: ALLOW
      from: [{services: [intruder]}]
      to: [{methods: [GET], paths: ["/orders/*"]}]
    - name: edge
      action: ALLOW
      from: [{services: [edge]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: legacy-migration}
spec:
  targetRefs: [{kind: Service, name: legacy}]
  mtls: {mode: PERMISSIVE}
`)
}

// secureMesh is the deployment of securityPolicy (startMesh's), with the
// URLs of the callers' apps.
type secureMesh struct {
	*mesh
	frontendApp, intruderApp string
}

func startSecureMesh(t *testing.T) *secureMesh {
	c := newCluster(t)
	c.policy("mesh.yaml", securityPolicy())
	c.startControlPlane()
	m := &secureMesh{mesh: startMesh(c, c.sidecar, []string{"frontend", "intruder", "orders", "legacy"})}
	m.frontendApp, m.intruderApp = m.app("frontend"), m.app("intruder")
	return m
}

// callStatus makes app call svc at path with method through its sidecar and
// returns the status the app saw.
func callStatus(app, method, svc, path string) (int, error) {
	r, err := do(method, app+"/call/"+svc+path)
	if err != nil {
		return 0, err
	}
	if r.status != http.StatusOK {
		return 0, fmt.Errorf("app answered %d: %s", r.status, r.body)
	}
	return r.reply.UpstreamStatus, nil
}

// TestMTLSAndAuthorization: identities, STRICT and PERMISSIVE inbound, peer
// verification, and a SecurityPolicy allow/deny matrix, through real proxies.
func TestMTLSAndAuthorization(t *testing.T) {
	t.Parallel()
	m := startSecureMesh(t)
	c := m.c

	eventually(t, 15*time.Second, "frontend reaches orders over mTLS", func() error {
		code, err := callStatus(m.frontendApp, "GET", "orders", "/orders/1")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})

	t.Run("authorization matrix", func(t *testing.T) {
		cases := []struct {
			caller, method, path string
			want                 int
		}{
			{"frontend", "GET", "/orders/1", 200},
			{"frontend", "POST", "/orders/1", 200},
			{"frontend", "GET", "/orders", 200},
			{"frontend", "GET", "/admin/x", 403},
			{"frontend", "POST", "/admin/x", 403},
			{"frontend", "GET", "/other", 403},
			{"intruder", "GET", "/orders/1", 200},
			{"intruder", "POST", "/orders/1", 403},
			{"intruder", "GET", "/orders", 403},
			{"intruder", "GET", "/admin/x", 403},
			{"edge", "GET", "/orders/1", 200},
			{"edge", "POST", "/anything", 200},
			{"edge", "GET", "/admin/x", 403},
			// One spelling per path: encodings and dot segments do not bypass a rule.
			{"edge", "GET", "/%61dmin/x", 403},
			{"edge", "GET", "/orders/../admin/x", 403},
			{"edge", "GET", "//admin//x", 403},
			{"edge", "GET", "/admin%2Fx", 400},
		}
		for _, tc := range cases {
			var code int
			var err error
			if tc.caller == "edge" {
				var r *response
				r, err = do(tc.method, m.gw+tc.path)
				if err == nil {
					code = r.status
					if code == 403 && r.body != "access denied\n" {
						t.Errorf("403 body %q", r.body)
					}
				}
			} else {
				app := m.frontendApp
				if tc.caller == "intruder" {
					app = m.intruderApp
				}
				code, err = callStatus(app, tc.method, "orders", tc.path)
			}
			if err != nil {
				t.Errorf("%s %s %s: %v", tc.caller, tc.method, tc.path, err)
				continue
			}
			if code != tc.want {
				t.Errorf("%s %s %s: %d, want %d", tc.caller, tc.method, tc.path, code, tc.want)
			}
		}
	})

	t.Run("denials are counted by policy", func(t *testing.T) {
		var stats struct {
			Denied map[string]uint64 `json:"rbac_denied"`
		}
		if err := adminGet(m.sidecarAdmin("orders"), "", "/stats", &stats); err != nil {
			t.Fatal(err)
		}
		if stats.Denied["default/orders-callers/no-admin"] == 0 {
			t.Errorf("orders' sidecar counted no denial by the no-admin rule: %v", stats.Denied)
		}
	})

	t.Run("gateway and route policies match the client's IP", func(t *testing.T) {
		c.policy("edge-clients.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: edge-clients}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  rules:
    - name: blocked-client
      action: DENY
      from: [{ipBlocks: [127.0.0.2/32]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: web-clients}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}]
  rules:
    - name: local-clients
      action: ALLOW
      from: [{ipBlocks: [127.0.0.0/30]}]
`)
		cases := []struct {
			from string
			want int
		}{
			{"127.0.0.1", 200}, // allowed by the route's ALLOW rule
			{"127.0.0.2", 403}, // denied by the gateway's DENY rule, which the route keeps
			{"127.0.0.5", 403}, // matches no ALLOW rule of the route
		}
		eventually(t, 30*time.Second, "client IP policies in force", func() error {
			for _, tc := range cases {
				code, err := getFrom(tc.from, m.gw+"/orders/1")
				if err != nil {
					return err
				}
				if code != tc.want {
					return fmt.Errorf("from %s: %d, want %d", tc.from, code, tc.want)
				}
			}
			return nil
		})
		var stats struct {
			Denied map[string]uint64 `json:"rbac_denied"`
		}
		if err := adminGet(c.addr("gateway-admin-edge"), "", "/stats", &stats); err != nil {
			t.Fatal(err)
		}
		if stats.Denied["default/edge-clients/blocked-client"] == 0 {
			t.Errorf("gateway counted no denial by edge-clients/blocked-client: %v", stats.Denied)
		}
		c.removePolicy("edge-clients.yaml")
		eventually(t, 30*time.Second, "policies removed", func() error {
			code, err := getFrom("127.0.0.5", m.gw+"/orders/1")
			if err != nil || code != 200 {
				return fmt.Errorf("from 127.0.0.5 after removal: %d %v", code, err)
			}
			return nil
		})
	})

	t.Run("a mesh route's policy matches the calling sidecar's identity", func(t *testing.T) {
		c.policy("legacy-route.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: legacy-mesh}
spec:
  parentRefs: [{kind: Service, name: legacy, port: 80}]
  rules:
    - backendRefs: [{name: legacy, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: legacy-secrets}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: legacy-mesh}]
  rules:
    - name: no-intruder-secrets
      action: DENY
      from: [{services: [intruder]}]
      to: [{paths: ["/secret/*"]}]
`)
		eventually(t, 30*time.Second, "mesh route policy in force", func() error {
			if code, err := callStatus(m.intruderApp, "GET", "legacy", "/secret/x"); err != nil || code != 403 {
				return fmt.Errorf("intruder → legacy /secret/x: %d %v, want 403 (denied at its own outbound)", code, err)
			}
			return nil
		})
		for _, tc := range []struct {
			app, path string
			want      int
		}{
			{m.frontendApp, "/secret/x", 200},
			{m.intruderApp, "/public", 200},
		} {
			if code, err := callStatus(tc.app, "GET", "legacy", tc.path); err != nil || code != tc.want {
				t.Errorf("%s → legacy %s: %d %v, want %d", tc.app, tc.path, code, err, tc.want)
			}
		}
		c.removePolicy("legacy-route.yaml")
	})

	t.Run("plaintext to a STRICT sidecar is refused", func(t *testing.T) {
		_, err := get("http://" + c.addr("orders-in") + "/orders/1")
		if err == nil {
			t.Fatal("plaintext request to the STRICT inbound listener got an HTTP answer")
		}
	})

	t.Run("a client certificate from another CA is refused", func(t *testing.T) {
		cert := selfSignedClientCert(t, "spiffe://meshgate.local/ns/default/svc/frontend")
		tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, // the test only checks the server refuses us
		}}}
		resp, err := tc.Get("https://" + c.addr("orders-in") + "/orders/1")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("forged client certificate accepted: %d", resp.StatusCode)
		}
	})

	t.Run("PERMISSIVE accepts plaintext and mTLS", func(t *testing.T) {
		r, err := get("http://" + c.addr("legacy-in") + "/x")
		if err != nil || r.reply.Service != "legacy" {
			t.Fatalf("plaintext to PERMISSIVE: %v %+v", err, r)
		}
		code, err := callStatus(m.frontendApp, "GET", "legacy", "/x")
		if err != nil || code != 200 {
			t.Fatalf("mTLS to PERMISSIVE: %d %v", code, err)
		}
		r, err = get(m.gw + "/legacy/x")
		if err != nil || r.reply.Service != "legacy" {
			t.Fatalf("gateway to PERMISSIVE: %v %+v", err, r)
		}
	})

	t.Run("a valid certificate for the wrong service is refused", func(t *testing.T) {
		// billing's endpoint is the intruder's sidecar: its certificate is
		// valid, but for intruder, not billing.
		code, err := callStatus(m.frontendApp, "GET", "billing", "/x")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("call to an endpoint with the wrong identity: %d, want 503", code)
		}
	})

	t.Run("proxies show identity, expiry and mode", func(t *testing.T) {
		out, err := c.cli("proxies")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"spiffe://meshgate.local/ns/default/svc/orders", "spiffe://meshgate.local/ns/default/svc/edge", "STRICT", "PERMISSIVE"} {
			if !strings.Contains(out, want) {
				t.Errorf("meshgate proxies lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("outboundScope Authorized leaves out what a sidecar may not call", func(t *testing.T) {
		// billing becomes callable by intruder only: frontend's sidecar
		// drops it (a call gets its own sidecar's 404), intruder's keeps
		// it, and what frontend may call still works.
		frontendAdmin, intruderAdmin := m.sidecarAdmin("frontend"), m.sidecarAdmin("intruder")
		const billingCluster = `"default/billing:80"`
		c.policy("scope.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {outboundScope: Authorized}
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: billing-callers}
spec:
  targetRefs: [{kind: Service, name: billing}]
  rules: [{action: ALLOW, from: [{services: [intruder]}]}]
`)
		eventually(t, 10*time.Second, "billing gone from frontend's sidecar", func() error {
			dump, err := proxyConfigDump(frontendAdmin)
			if err != nil || strings.Contains(dump, billingCluster) {
				return fmt.Errorf("still there (%v)", err)
			}
			return nil
		})
		if dump, err := proxyConfigDump(intruderAdmin); err != nil || !strings.Contains(dump, billingCluster) {
			t.Errorf("intruder's sidecar lost billing, which it may call (%v)", err)
		}
		if code, err := callStatus(m.frontendApp, "GET", "billing", "/x"); err != nil || code != http.StatusNotFound {
			t.Errorf("frontend calling billing: %d %v, want 404 from its own sidecar", code, err)
		}
		if code, err := callStatus(m.frontendApp, "GET", "orders", "/orders/1"); err != nil || code != http.StatusOK {
			t.Errorf("frontend calling orders: %d %v, want 200", code, err)
		}
		c.removePolicy("scope.yaml")
		eventually(t, 10*time.Second, "billing back in frontend's sidecar", func() error {
			dump, err := proxyConfigDump(frontendAdmin)
			if err != nil || !strings.Contains(dump, billingCluster) {
				return fmt.Errorf("not yet (%v)", err)
			}
			return nil
		})
	})
}

// TestCertificateAuthorityRefusals: bad tokens, foreign identities, garbage
// CSRs and revoked tokens are refused, and the control plane keeps serving.
func TestCertificateAuthorityRefusals(t *testing.T) {
	t.Parallel()
	c, gw := startBlueGreen(t)

	conn, err := grpc.NewClient(c.xds, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		InsecureSkipVerify: true, // this client only probes refusals
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ca := cav1.NewCertificateAuthorityClient(conn)
	ctx := ctxTimeout(t, 30*time.Second)
	frontendToken := c.token("frontend")
	revoked := c.token("frontend")
	id := strings.Split(revoked, ".")[1]
	if _, err := c.cli("token", "revoke", id); err != nil {
		t.Fatal(err)
	}
	list, err := c.cli("token", "list")
	if err != nil || !strings.Contains(list, id) {
		t.Fatalf("token list: %v\n%s", err, list)
	}

	cases := []struct {
		name  string
		csr   []byte
		token string
		want  codes.Code
	}{
		{"garbage bytes", []byte("\x00\x01not a csr"), frontendToken, codes.InvalidArgument},
		{"no token", csrFor(t, "spiffe://meshgate.local/ns/default/svc/frontend"), "", codes.Unauthenticated},
		{"bad token", csrFor(t, "spiffe://meshgate.local/ns/default/svc/frontend"), "mgt1.nope", codes.Unauthenticated},
		{"revoked token", csrFor(t, "spiffe://meshgate.local/ns/default/svc/frontend"), revoked, codes.Unauthenticated},
		{"foreign SPIFFE ID", csrFor(t, "spiffe://meshgate.local/ns/default/svc/orders"), frontendToken, codes.PermissionDenied},
		{"other trust domain", csrFor(t, "spiffe://evil.example/ns/default/svc/frontend"), frontendToken, codes.InvalidArgument},
	}
	for _, tc := range cases {
		_, err := ca.Sign(ctx, &cav1.SignRequest{CsrPem: tc.csr, Token: tc.token})
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	// The good request still works, and so does traffic.
	resp, err := ca.Sign(ctx, &cav1.SignRequest{CsrPem: csrFor(t, "spiffe://meshgate.local/ns/default/svc/frontend"), Token: frontendToken})
	if err != nil || resp.SpiffeId != "spiffe://meshgate.local/ns/default/svc/frontend" {
		t.Fatalf("good CSR: %v", err)
	}
	r, err := get(gw)
	if err != nil || r.reply.Service != "blue" {
		t.Fatalf("traffic after refusals: %v %+v", err, r)
	}

	// A proxy started with a revoked token stops with a clear error.
	out, err := exec.Command(binary, "sidecar", "--service", "frontend", "--app", c.addr("nowhere"),
		"--inbound", c.addr("x-in"), "--outbound", c.addr("x-out"), "--xds", c.xds, "--token", revoked).CombinedOutput()
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "token") {
		t.Fatalf("sidecar with a revoked token: %v\n%s", err, out)
	}
}

func csrFor(t *testing.T, spiffeID string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffeID)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func selfSignedClientCert(t *testing.T, spiffeID string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffeID)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// getFrom sends GET url from the local address ip (any 127.0.0.0/8 address
// works on loopback) and returns the status.
func getFrom(ip, url string) (int, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
