package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testPair is a self-signed certificate and its key, PEM, valid from
// notBefore to notAfter.
func testPair(t *testing.T, cn string, notBefore, notAfter time.Time) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// secretDoc is a Secret document with data (base64) tls.crt and tls.key.
func secretDoc(name, namespace, certPEM, keyPEM string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %s, namespace: %s}
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
`, name, namespace, base64.StdEncoding.EncodeToString([]byte(certPEM)), base64.StdEncoding.EncodeToString([]byte(keyPEM)))
}

// httpsGateway is the Gateway edge (namespace default) with a plaintext
// listener and an HTTPS listener whose certificateRef is ref (a flow
// mapping's fields).
func httpsGateway(ref string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: shop.example.com
    tls:
      mode: Terminate
      certificateRefs: [{` + ref + `}]
`
}

// TestHTTPSListenerCertificates: an HTTPS listener is programmed with the
// certificate of a valid TLS Secret; with a bad one (not PEM, a key of
// another certificate, expired, missing, of another namespace without a
// ReferenceGrant) it is not, its status says ResolvedRefs=False with the
// Gateway API's reason, the error names the file, line and field, and no
// key material appears in any message or status.
func TestHTTPSListenerCertificates(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cert, key := testPair(t, "shop.example.com", now.Add(-time.Hour), now.Add(time.Hour))
	otherCert, otherKey := testPair(t, "other", now.Add(-time.Hour), now.Add(time.Hour))
	oldCert, oldKey := testPair(t, "old", now.Add(-2*time.Hour), now.Add(-time.Hour))
	grant := `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: certs, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret}]
`
	tests := []struct {
		name    string
		ref     string
		secrets string
		// wantErr is the error, "file:line: field: message" prefix; ""
		// for none.
		wantErr    string
		wantReason string
	}{
		{name: "valid", ref: "name: shop", secrets: secretDoc("shop", "default", cert, key)},
		{name: "valid across namespaces with a ReferenceGrant", ref: "name: shop, namespace: certs",
			secrets: secretDoc("shop", "certs", cert, key) + "---\n" + grant},
		{name: "across namespaces without a ReferenceGrant", ref: "name: shop, namespace: certs",
			secrets: secretDoc("shop", "certs", cert, key), wantReason: "RefNotPermitted",
			wantErr: "gw.yaml:14: spec.listeners[1].tls.certificateRefs[0].namespace: Secret certs/shop is in another namespace: it needs a ReferenceGrant"},
		{name: "missing", ref: "name: nope", wantReason: "InvalidCertificateRef",
			wantErr: "gw.yaml:14: spec.listeners[1].tls.certificateRefs[0].name: Secret default/nope does not exist"},
		{name: "not PEM", ref: "name: shop", secrets: secretDoc("shop", "default", "hello", key), wantReason: "InvalidCertificateRef",
			wantErr: `secrets.yaml:6: data["tls.crt"]: tls.crt is not PEM`},
		{name: "key of another certificate", ref: "name: shop", secrets: secretDoc("shop", "default", cert, otherKey), wantReason: "InvalidCertificateRef",
			wantErr: `secrets.yaml:7: data["tls.key"]: tls.key does not match the certificate's public key`},
		{name: "expired", ref: "name: shop", secrets: secretDoc("shop", "default", oldCert, oldKey), wantReason: "InvalidCertificateRef",
			wantErr: `secrets.yaml:6: data["tls.crt"]: tls.crt: the certificate (subject "CN=old") expired at`},
		{name: "another kind", ref: "name: shop, kind: ConfigMap", secrets: secretDoc("shop", "default", otherCert, otherKey), wantReason: "InvalidCertificateRef",
			wantErr: "gw.yaml:14: spec.listeners[1].tls.certificateRefs[0]: certificateRef of kind \"ConfigMap\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := Input{Files: []File{{Name: "gw.yaml", Data: []byte(httpsGateway(tt.ref))}, {Name: "secrets.yaml", Data: []byte(tt.secrets)}}}
			r := Evaluate(in)
			var errs []string
			for _, e := range r.Errors {
				errs = append(errs, e.Error())
			}
			if tt.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("errors: %v", errs)
				}
				g := r.Set.Gateways[0]
				if len(g.Spec.Listeners) != 2 {
					t.Fatalf("served listeners %v, want both", g.Spec.Listeners)
				}
				certs := r.Set.ListenerCertificates("default", &g.Spec.Listeners[1])
				if len(certs) != 1 || string(certs[0].CertPEM) != cert || string(certs[0].KeyPEM) != key {
					t.Errorf("ListenerCertificates = %v", certs)
				}
				return
			}
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, tt.wantErr) }) {
				t.Fatalf("errors %q, want one starting with %q", errs, tt.wantErr)
			}
			if g := r.Set.Gateways[0]; len(g.Spec.Listeners) != 1 || g.Spec.Listeners[0].Name != "http" {
				t.Errorf("served listeners %v, want http only", g.Spec.Listeners)
			}
			st := findStatus(r, KindGateway, "edge")
			https := st.Object.Status.Listeners[1]
			var got []string
			for _, c := range https.Conditions {
				got = append(got, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
			}
			for _, want := range []string{"ResolvedRefs=False/" + tt.wantReason, "Programmed=False/Invalid"} {
				if !slices.Contains(got, want) {
					t.Errorf("listener conditions %v, want %s", got, want)
				}
			}
			all, err := json.Marshal(r.Statuses)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{key, otherKey, oldKey} {
				body := strings.Split(strings.TrimSpace(secret), "\n")[1]
				if strings.Contains(string(all), body[:24]) || strings.Contains(strings.Join(errs, "\n"), body[:24]) {
					t.Error("a private key appears in the statuses or errors")
				}
			}
			if strings.Contains(string(all), "PRIVATE KEY") || strings.Contains(string(all), base64.StdEncoding.EncodeToString([]byte(key))[:24]) {
				t.Error("a private key appears in the statuses")
			}
		})
	}
}

// TestSecretFromFiles: a Secret's certificate and key can be PEM files
// named by annotations, relative to the policy file; a missing file is an
// error naming it.
func TestSecretFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := testPair(t, "shop.example.com", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "shop.crt"), []byte(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "shop.key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := func(keyFile string) string {
		return `apiVersion: v1
kind: Secret
metadata:
  name: shop
  annotations:
    meshgate.dev/tls-cert-file: shop.crt
    meshgate.dev/tls-key-file: ` + keyFile + `
type: kubernetes.io/tls
`
	}
	gw := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(gw, []byte(httpsGateway("name: shop")), 0o600); err != nil {
		t.Fatal(err)
	}
	sf := filepath.Join(dir, "secret.yaml")
	if err := os.WriteFile(sf, []byte(secret("shop.key")), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if certs := set.ListenerCertificates("default", &set.Gateways[0].Spec.Listeners[1]); len(certs) != 1 || string(certs[0].KeyPEM) != key {
		t.Errorf("ListenerCertificates = %v", certs)
	}
	if err := os.WriteFile(sf, []byte(secret("missing.key")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	want := sf + `:7: metadata.annotations["meshgate.dev/tls-key-file"]: reading ` + filepath.Join(dir, "missing.key")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Load = %v, want an error containing %q", err, want)
	}
}

// TestHTTPSListenerFields: tls is required for HTTPS and refused for HTTP;
// Passthrough is not supported yet; options are checked; HTTP and HTTPS
// listeners do not share a port.
func TestHTTPSListenerFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, listener, want string
	}{
		{"HTTPS without tls", "{name: s, port: 8443, protocol: HTTPS}", "gw.yaml:8: spec.listeners[1].tls: tls is required for protocol HTTPS"},
		{"HTTP with tls", "{name: s, port: 8443, protocol: HTTP, tls: {certificateRefs: [{name: x}]}}", "gw.yaml:8: spec.listeners[1].tls: tls is only for protocols HTTPS and TLS"},
		{"passthrough", "{name: s, port: 8443, protocol: HTTPS, tls: {mode: Passthrough}}", "gw.yaml:8: spec.listeners[1].tls.mode: mode Passthrough is not supported yet"},
		{"TLS version", "{name: s, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: c}], options: {meshgate.dev/min-tls-version: '1.1'}}}",
			`gw.yaml:8: spec.listeners[1].tls.options["meshgate.dev/min-tls-version"]: unknown TLS version "1.1"`},
		{"cipher suite", "{name: s, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: c}], options: {meshgate.dev/cipher-suites: 'RC4-SHA'}}}",
			`gw.yaml:8: spec.listeners[1].tls.options["meshgate.dev/cipher-suites"]: unknown or insecure cipher suite "RC4-SHA"`},
		{"unknown option", "{name: s, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: c}], options: {x: y}}}",
			`gw.yaml:8: spec.listeners[1].tls.options.x: unknown option "x"`},
		{"HTTPRoute on a TLS listener", "{name: s, port: 8443, protocol: TLS, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}",
			`gw.yaml:8: spec.listeners[1].allowedRoutes.kinds[0]: route kind HTTPRoute does not attach to a listener of protocol TLS`},
		{"HTTP and HTTPS on one port", "{name: s, port: 8080, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: c}]}}",
			`gw.yaml:8: spec.listeners[1].protocol: listener "s" conflicts with listener "http": port 8080 serves HTTP, not HTTPS`},
	}
	cert, key := testPair(t, "c", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gw := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge}\nspec:\n  gatewayClassName: meshgate\n  listeners:\n  - {name: http, port: 8080, protocol: HTTP}\n  - " + tt.listener + "\n"
			r := Evaluate(Input{Files: []File{{Name: "gw.yaml", Data: []byte(gw)}, {Name: "c.yaml", Data: []byte(secretDoc("c", "default", cert, key))}}})
			var errs []string
			for _, e := range r.Errors {
				errs = append(errs, e.Error())
			}
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, tt.want) }) {
				t.Errorf("errors %q, want one starting with %q", errs, tt.want)
			}
		})
	}
}
