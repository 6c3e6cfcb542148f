package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCertificate is a self-signed certificate for names, its subject's
// common name cn, as PEM.
type testCertificate struct {
	certPEM, keyPEM string
	pool            *x509.CertPool
}

func newTestCertificate(t *testing.T, cn string, names ...string) testCertificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return testCertificate{
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		pool:    pool,
	}
}

// tlsSecret is a kubernetes.io/tls Secret document holding c.
func tlsSecret(name string, c testCertificate) string {
	indent := func(s string) string {
		return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ")
	}
	return fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: %s}
type: kubernetes.io/tls
stringData:
  tls.crt: |
%s
  tls.key: |
%s
`, name, indent(c.certPEM), indent(c.keyPEM))
}

// httpsPolicy is the Gateway edge with a plaintext listener on ${gw} that
// redirects to HTTPS, and two HTTPS listeners on ${gws}: shop.test and
// *.example.test, each with its certificate, routing to alpha.
const httpsPolicy = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: ${gw.port}}
    - name: shop
      protocol: HTTPS
      port: ${gws.port}
      hostname: shop.test
      tls: {mode: Terminate, certificateRefs: [{name: shop-cert}]}
    - name: wild
      protocol: HTTPS
      port: ${gws.port}
      hostname: "*.example.test"
      tls: {certificateRefs: [{kind: Secret, name: wild-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{name: edge, sectionName: shop}, {name: edge, sectionName: wild}]
  rules:
    - backendRefs: [{name: alpha, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  rules:
    - filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, port: ${gws.port}, statusCode: 301}
`

// httpsClient is a client whose TLS handshakes send the SNI serverName
// and trust roots; keepAlive false: a new connection, so a new handshake,
// per request.
func httpsClient(serverName string, roots *x509.CertPool, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{ServerName: serverName, RootCAs: roots},
			DisableKeepAlives: !keepAlive,
			ForceAttemptHTTP2: true,
		},
	}
}

// peerSubject handshakes with addr, sending the SNI serverName, and
// returns the common name of the certificate presented.
func peerSubject(addr, serverName string, maxVersion uint16) (string, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		ServerName: serverName, InsecureSkipVerify: true, MaxVersion: maxVersion, MinVersion: tls.VersionTLS10,
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// TestHTTPSListeners: the gateway terminates TLS on its HTTPS listeners,
// the SNI choosing the certificate; TLS 1.1 is refused; a request for a
// host of another listener than the SNI's is answered 421; the HTTP
// listener redirects to HTTPS; private keys appear in no config dump; and
// a certificate changed in the policy is presented to new handshakes,
// with no failed request under a steady load.
func TestHTTPSListeners(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	shop := newTestCertificate(t, "shop v1", "shop.test")
	wild := newTestCertificate(t, "wildcard", "*.example.test")
	shop2 := newTestCertificate(t, "shop v2", "shop.test") // the replacement
	c.policy("services.yaml", staticServices("alpha"))
	c.policy("secrets.yaml", yamlDocs(tlsSecret("shop-cert", shop), tlsSecret("wild-cert", wild)))
	c.policy("gateway.yaml", httpsPolicy)
	c.app("alpha", "alpha", "v1", "")
	c.startControlPlane()
	c.gateway("edge", "--id", "gateway~edge~https")
	gws := c.addr("gws")

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(shop.certPEM))
	roots.AppendCertsFromPEM([]byte(wild.certPEM))
	fetch := func(cl *http.Client, host, path string) (*http.Response, string, error) {
		req, err := http.NewRequest(http.MethodGet, "https://"+gws+path, nil)
		if err != nil {
			return nil, "", err
		}
		req.Host = host
		resp, err := cl.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, string(body), err
	}
	shopClient := httpsClient("shop.test", roots, true)
	eventually(t, 15*time.Second, "HTTPS served", func() error {
		resp, body, err := fetch(shopClient, "shop.test", "/")
		if err != nil {
			return err
		}
		var r reply
		_ = json.Unmarshal([]byte(body), &r)
		if resp.StatusCode != http.StatusOK || r.Service != "alpha" {
			return fmt.Errorf("got %d %.200s", resp.StatusCode, body)
		}
		if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
			return fmt.Errorf("ALPN %v, want h2", resp.TLS)
		}
		return nil
	})

	t.Run("SNI selects the certificate", func(t *testing.T) {
		for sni, want := range map[string]string{"shop.test": "shop v1", "a.example.test": "wildcard", "b.c.example.test": "wildcard", "": "shop v1", "other.test": "shop v1"} {
			got, err := peerSubject(gws, sni, 0)
			if err != nil {
				t.Fatalf("SNI %q: %v", sni, err)
			}
			if got != want {
				t.Errorf("SNI %q: certificate %q, want %q", sni, got, want)
			}
		}
		resp, body, err := fetch(httpsClient("a.example.test", roots, false), "a.example.test", "/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("wildcard listener: %v %v %.200s", err, resp, body)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		if _, err := peerSubject(gws, "shop.test", tls.VersionTLS11); err == nil {
			t.Error("a TLS 1.1 handshake succeeded")
		}
		if _, err := peerSubject(gws, "shop.test", tls.VersionTLS12); err != nil {
			t.Errorf("TLS 1.2: %v", err)
		}
	})
	t.Run("misdirected request", func(t *testing.T) {
		resp, body, err := fetch(httpsClient("shop.test", roots, false), "a.example.test", "/")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("SNI shop.test, Host a.example.test: %d %.200s, want 421", resp.StatusCode, body)
		}
	})
	t.Run("HTTP redirects to HTTPS", func(t *testing.T) {
		r, err := get("http://"+c.addr("gw")+"/cart?x=1", "Host: shop.test")
		if err != nil {
			t.Fatal(err)
		}
		if want := "https://shop.test:" + c.vars["gws.port"] + "/cart?x=1"; r.status != http.StatusMovedPermanently || r.header.Get("Location") != want {
			t.Errorf("got %d Location %q, want 301 %q", r.status, r.header.Get("Location"), want)
		}
	})
	t.Run("no private key in config dumps", func(t *testing.T) {
		var cp, gw json.RawMessage
		if err := adminGet(c.admin, c.adminToken(), "/config_dump?node=gateway~edge~https", &cp); err != nil {
			t.Fatal(err)
		}
		if err := adminGet(c.addr("gateway-admin-edge"), "", "/config_dump", &gw); err != nil {
			t.Fatal(err)
		}
		for name, dump := range map[string]string{"control plane": string(cp), "gateway": string(gw)} {
			keyB64 := strings.Split(strings.TrimSpace(shop.keyPEM), "\n")[1]
			if strings.Contains(dump, "PRIVATE KEY") || strings.Contains(dump, keyB64[:20]) || strings.Contains(dump, "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS") {
				t.Errorf("the %s's config dump shows a private key", name)
			}
			if !strings.Contains(dump, "listener-cert/default/shop-cert") {
				t.Errorf("the %s's config dump has no listener certificate secret: %.500s", name, dump)
			}
		}
	})

	t.Run("certificate change picked up live", func(t *testing.T) {
		var failures atomic.Int64
		var firstFailure sync.Once
		var total atomic.Int64
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				// Keep-alive: the connections opened before the change keep
				// serving; the pool accepts either certificate.
				both := x509.NewCertPool()
				both.AppendCertsFromPEM([]byte(shop.certPEM))
				both.AppendCertsFromPEM([]byte(shop2.certPEM))
				cl := httpsClient("shop.test", both, true)
				for ctx.Err() == nil {
					resp, body, err := fetch(cl, "shop.test", "/")
					total.Add(1)
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%d %.200s", resp.StatusCode, body)
					}
					if err != nil && ctx.Err() == nil {
						failures.Add(1)
						firstFailure.Do(func() { t.Logf("first failure: %v", err) })
					}
				}
			})
		}
		eventually(t, 20*time.Second, "load running", func() error {
			if total.Load() < 50 {
				return fmt.Errorf("%d requests", total.Load())
			}
			return nil
		})
		c.policy("secrets.yaml", yamlDocs(tlsSecret("shop-cert", shop2), tlsSecret("wild-cert", wild)))
		eventually(t, 20*time.Second, "new handshakes present the new certificate", func() error {
			got, err := peerSubject(gws, "shop.test", 0)
			if err != nil {
				return err
			}
			if got != "shop v2" {
				return fmt.Errorf("certificate %q", got)
			}
			return nil
		})
		n := total.Load()
		eventually(t, 20*time.Second, "load keeps running", func() error {
			if total.Load() < n+50 {
				return fmt.Errorf("%d requests since", total.Load()-n)
			}
			return nil
		})
		cancel()
		wg.Wait()
		if f := failures.Load(); f > 0 {
			t.Errorf("%d of %d requests failed across the certificate change", f, total.Load())
		}
		// A client trusting only the new certificate gets through.
		resp, body, err := fetch(httpsClient("shop.test", shop2.pool, false), "shop.test", "/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("with the new certificate: %v %v %.200s", err, resp, body)
		}
	})
}

// TestHTTPSCertificateFiles: a Secret may name PEM files on the control
// plane's disk; writing new files (in a directory of their own, beside the
// policy's) is picked up without touching the policy: new handshakes
// present the new certificate.
func TestHTTPSCertificateFiles(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	certDir := filepath.Join(c.dir, "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(cert testCertificate) {
		// Both files within the control plane's debounce: one reload.
		writeFile(t, filepath.Join(certDir, "files.key"), cert.keyPEM)
		writeFile(t, filepath.Join(certDir, "files.crt"), cert.certPEM)
	}
	write(newTestCertificate(t, "files v1", "files.test"))
	c.policy("services.yaml", staticServices("alpha"))
	c.policy("gateway.yaml", yamlDocs(`
apiVersion: v1
kind: Secret
metadata:
  name: files-cert
  annotations:
    meshgate.dev/tls-cert-file: certs/files.crt
    meshgate.dev/tls-key-file: certs/files.key
type: kubernetes.io/tls
`, `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - name: files
      protocol: HTTPS
      port: ${gws.port}
      tls: {certificateRefs: [{name: files-cert}]}
`))
	c.app("alpha", "alpha", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gws := c.addr("gws")
	subject := func(want string) func() error {
		return func() error {
			got, err := peerSubject(gws, "files.test", 0)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("certificate %q", got)
			}
			return nil
		}
	}
	eventually(t, 15*time.Second, "the files' certificate presented", subject("files v1"))
	write(newTestCertificate(t, "files v2", "files.test"))
	eventually(t, 20*time.Second, "the new files' certificate presented", subject("files v2"))
}
