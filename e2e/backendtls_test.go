package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startHTTPSBackend serves HTTPS at addr with cert, answering
// "tls <SNI>" to every request.
func startHTTPSBackend(t *testing.T, addr string, cert testCertificate) {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(cert.certPEM), []byte(cert.keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "tls "+r.TLS.ServerName)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // refused handshakes are expected
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
}

// caConfigMap is a ConfigMap name whose ca.crt is the certificate of c.
func caConfigMap(name string, c testCertificate) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata:\n  ca.crt: |\n    %s\n", name,
		strings.ReplaceAll(strings.TrimSpace(c.certPEM), "\n", "\n    "))
}

// backendTLSPolicy targets the Service svc; validation is its
// spec.validation as a flow mapping.
func backendTLSPolicy(name, svc, validation string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: %s}]
  validation: %s
`, name, svc, validation)
}

// TestBackendTLSPolicy: a gateway calls an HTTPS backend (its own CA) over
// TLS when a BackendTLSPolicy targets its Service: with the right CA and
// hostname the request succeeds and the backend sees the SNI; with
// another CA, or subjectAltNames the certificate does not have, the
// handshake fails and the client gets a 503 whose access log line is
// flagged UF; a policy whose CA ConfigMap is missing fails its calls too.
func TestBackendTLSPolicy(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	backendCert := newTestCertificate(t, "billing", "billing.internal")
	otherCA := newTestCertificate(t, "other", "billing.internal")
	startHTTPSBackend(t, c.addr("billing"), backendCert)

	var docs []string
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backends}
spec:
  parentRefs: [{name: edge}]
  rules:
`
	for _, svc := range []string{"billing", "badca", "badsan", "noca"} {
		docs = append(docs, fmt.Sprintf("apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: %s}\nspec:\n  ports: [{port: 80}]\n  endpoints: [{address: \"${billing}\"}]\n", svc))
		routes += fmt.Sprintf("    - matches: [{path: {type: PathPrefix, value: /%s}}]\n      backendRefs: [{name: %s, port: 80}]\n", svc, svc)
	}
	docs = append(docs, edgeGateway, routes,
		caConfigMap("billing-ca", backendCert), caConfigMap("other-ca", otherCA),
		backendTLSPolicy("billing", "billing", `{hostname: billing.internal, caCertificateRefs: [{group: "", kind: ConfigMap, name: billing-ca}]}`),
		backendTLSPolicy("badca", "badca", `{hostname: billing.internal, caCertificateRefs: [{group: "", kind: ConfigMap, name: other-ca}]}`),
		backendTLSPolicy("badsan", "badsan", `{hostname: billing.internal, caCertificateRefs: [{group: "", kind: ConfigMap, name: billing-ca}], subjectAltNames: [{type: Hostname, hostname: payments.internal}]}`),
		backendTLSPolicy("noca", "noca", `{hostname: billing.internal, caCertificateRefs: [{group: "", kind: ConfigMap, name: missing}]}`),
		fmt.Sprintf("apiVersion: meshgate.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  accessLog: {path: %q}\n", logFile),
	)
	c.policy("policy.yaml", yamlDocs(docs...))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")

	c.expectEventually("billing over TLS", 15*time.Second, gw+"/billing", nil, func(r *response) error {
		if r.status != http.StatusOK || r.body != "tls billing.internal" {
			return fmt.Errorf("status %d, body %q; want 200 \"tls billing.internal\"", r.status, r.body)
		}
		return nil
	})
	for _, path := range []string{"/badca", "/badsan", "/noca"} {
		c.expectEventually(path+" fails", 15*time.Second, gw+path, nil, func(r *response) error {
			if r.status != http.StatusServiceUnavailable {
				return fmt.Errorf("status %d, want 503", r.status)
			}
			return nil
		})
	}
	for _, path := range []string{"/badca", "/badsan"} {
		lines := waitLines(t, logFile, 1, path+"'s access log line", func(l accessLine) bool {
			return l.str("path") == path && l.code() == http.StatusServiceUnavailable
		})
		if l := lines[0]; l.str("response_flags") != "UF" || l.str("upstream_host") != c.addr("billing") {
			t.Errorf("%s line %v: want UF to %s", path, l, c.addr("billing"))
		}
	}
}
