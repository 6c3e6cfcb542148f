package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// acmePolicy is the Gateway edge with a plaintext listener on ${gw} (port
// 80's stand-in, where Pebble validates HTTP-01) that redirects to HTTPS,
// and an HTTPS listener for shop.acme.test on ${gws} whose certificate
// is obtained from the ACMEIssuer pebble (server and CA bundle given by
// the test), routing to alpha.
const acmePolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: ACMEIssuer
metadata: {name: pebble}
spec:
  server: %s
  email: ops@acme.test
  caFile: %s
  challenges: [%s]
  renewalWindowRatio: %s
---
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
      hostname: shop.acme.test
      tls:
        options: {meshgate.dev/acme-issuer: pebble}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{name: edge, sectionName: shop}]
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

// acmeStartPolicy is the Gateway edge with its plaintext listener only:
// what the gateway is started with, so that it is connected before an
// order starts (a challenge is validated at once when no gateway is
// connected, after a short grace, however long a loaded machine takes to
// start one).
const acmeStartPolicy = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners:
    - {name: http, protocol: HTTP, port: ${gw.port}}
`

// acmeCluster starts Pebble validating against the ports ${gw} and ${gws},
// the control plane, alpha and the gateway edge, then gives the control
// plane acmePolicy (challenge and renewal ratio as given).
func acmeCluster(t *testing.T, o pebbleOptions, challenge, ratio string, cpArgs ...string) (*cluster, *pebble) {
	t.Helper()
	c := newCluster(t)
	o.HTTPPort, o.TLSPort = portOf(c.addr("gw")), portOf(c.addr("gws"))
	p := startPebble(t, o)
	c.policy("services.yaml", staticServices("alpha"))
	c.policy("gateway.yaml", acmeStartPolicy)
	c.app("alpha", "alpha", "v1", "")
	c.startControlPlane(cpArgs...)
	c.gateway("edge", "--id", "gateway~edge~acme")
	c.policy("gateway.yaml", fmt.Sprintf(acmePolicy, p.directoryURL(), p.caFile, challenge, ratio))
	return c, p
}

// acmeServed waits until the gateway serves shop.acme.test over HTTPS
// with a certificate that verifies against Pebble's roots, issued by
// Pebble's intermediate for the name, and a request routed to alpha
// succeeds; it returns the certificate.
func acmeServed(t *testing.T, c *cluster, p *pebble, timeout time.Duration, unlike string) *x509.Certificate {
	t.Helper()
	roots, intermediate := p.roots(), p.intermediate()
	var leaf *x509.Certificate
	eventually(t, timeout, "the gateway serves a certificate from Pebble", func() error {
		cl := httpsClient("shop.acme.test", roots, false)
		req, err := http.NewRequest(http.MethodGet, "https://"+c.addr("gws")+"/", nil)
		if err != nil {
			return err
		}
		req.Host = "shop.acme.test"
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r reply
		_ = json.Unmarshal(body, &r)
		if resp.StatusCode != http.StatusOK || r.Service != "alpha" {
			return fmt.Errorf("got %d %.200s", resp.StatusCode, body)
		}
		got := resp.TLS.PeerCertificates[0]
		if got.SerialNumber.Text(16) == unlike {
			return fmt.Errorf("still the certificate of serial %s", unlike)
		}
		if !slices.Contains(got.DNSNames, "shop.acme.test") {
			return fmt.Errorf("certificate for %v, want shop.acme.test", got.DNSNames)
		}
		if got.Issuer.String() != intermediate.Subject.String() || got.CheckSignatureFrom(intermediate) != nil {
			return fmt.Errorf("certificate issued by %q, not Pebble's intermediate %q", got.Issuer, intermediate.Subject)
		}
		leaf = got
		return nil
	})
	return leaf
}

// TestACMEHTTP01: a listener naming an ACMEIssuer is not served until its
// certificate is obtained; the control plane obtains it from a real ACME
// CA (Pebble, which fetches the HTTP-01 token from the gateway's
// plaintext listener: the challenge route comes before the listener's
// redirect to HTTPS); the gateway then serves it; the certificate and
// the account are kept in the data directory, so a restarted control
// plane serves the same certificate without a new order.
func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	c, p := acmeCluster(t, pebbleOptions{}, "http-01", "0.33")
	leaf := acmeServed(t, c, p, 60*time.Second, "")
	if !strings.Contains(p.out.String(), "Attempting to validate w/ HTTP") {
		t.Errorf("Pebble did not validate an http-01 challenge; its output:\n%s", p.out.String())
	}
	if strings.Contains(c.cp.out.String(), "PRIVATE KEY") {
		t.Error("the control plane logged a private key")
	}
	// The redirect still answers other paths of the plaintext listener.
	r, err := get("http://"+c.addr("gw")+"/cart", "Host: shop.acme.test")
	if err != nil || r.status != http.StatusMovedPermanently {
		t.Errorf("plaintext listener: %v %v, want the 301 redirect", err, r)
	}

	t.Run("restart keeps the certificate", func(t *testing.T) {
		orders := strings.Count(p.out.String(), "Issued certificate serial")
		c.cp.stop()
		c.startControlPlane()
		eventually(t, 30*time.Second, "the restarted control plane serves the stored certificate", func() error {
			if !strings.Contains(c.cp.out.String(), "ACME: serving certificate") {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		again := acmeServed(t, c, p, 30*time.Second, "")
		if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Errorf("serial %s after the restart, want %s (the stored certificate)", again.SerialNumber.Text(16), leaf.SerialNumber.Text(16))
		}
		if n := strings.Count(p.out.String(), "Issued certificate serial"); n != orders {
			t.Errorf("Pebble issued %d certificates after the restart, want none", n-orders)
		}
	})
}

// TestACMERenewal: a certificate renewed (Pebble issues 20 s
// certificates; renewed with 3/4 of their lifetime left) is presented by
// the gateway to the next handshakes, with a new serial, without a
// restart.
func TestACMERenewal(t *testing.T) {
	t.Parallel()
	c, p := acmeCluster(t, pebbleOptions{Validity: 20 * time.Second}, "http-01", "0.75", "--acme-renew-check-interval", "1s")
	first := acmeServed(t, c, p, 60*time.Second, "")
	renewed := acmeServed(t, c, p, 60*time.Second, first.SerialNumber.Text(16))
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("the renewed certificate expires %s, not after the first's %s", renewed.NotAfter, first.NotAfter)
	}
}

// TestACMETLSALPN01: with the TLS-ALPN-01 challenge only, Pebble
// validates by a handshake with the gateway's HTTPS port offering ALPN
// acme-tls/1 (the challenge's filter chain, served before the listener
// has a certificate); the listener is then served with the certificate
// obtained, and ordinary handshakes never get the challenge's.
func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	c, p := acmeCluster(t, pebbleOptions{}, "tls-alpn-01", "0.33")
	leaf := acmeServed(t, c, p, 60*time.Second, "")
	// Pebble logs no TLS-ALPN-01 attempt; it logs every HTTP-01 one.
	if out := c.cp.out.String(); !strings.Contains(out, "type=tls-alpn-01") || strings.Contains(out, "type=http-01") || strings.Contains(p.out.String(), "validate w/ HTTP") {
		t.Errorf("not (only) a tls-alpn-01 challenge answered; the control plane's output:\n%s", out)
	}
	got, err := acmeTLSDial(c.addr("gws"), "shop.acme.test", p.roots())
	if err != nil {
		t.Fatal(err)
	}
	if got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("a handshake got serial %s, want the obtained certificate's %s", got.SerialNumber.Text(16), leaf.SerialNumber.Text(16))
	}
}

// acmeTLSDial handshakes with addr as a browser would (the SNI, no
// client certificate) and returns the certificate presented.
func acmeTLSDial(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{ServerName: serverName, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// TestACMEConsulReplicas: two control planes sharing Consul (policy, and
// the state where certificates, keys and the account are kept,
// encrypted) obtain the listener's certificate once (certmagic's lock is
// a Consul session lock): whichever replica orders it, the challenge is
// stored in Consul and served by the gateway connected to either; both
// replicas then serve the one certificate.
func TestACMEConsulReplicas(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	p := startPebble(t, pebbleOptions{HTTPPort: portOf(c.addr("gw")), TLSPort: portOf(c.addr("gws"))})
	replicas, _ := startReplicas(t, c, consul, 2)
	c.app("alpha", "alpha", "v1", "")
	c.applyToConsul(consul, yamlDocs(staticServices("alpha"), acmeStartPolicy))
	c.gateway("edge", "--id", "gateway~edge~acme")
	c.applyToConsul(consul, yamlDocs(staticServices("alpha"), fmt.Sprintf(acmePolicy, p.directoryURL(), p.caFile, "http-01", "0.33")))
	leaf := acmeServed(t, c, p, 60*time.Second, "")
	eventually(t, 30*time.Second, "both replicas serve the certificate", func() error {
		for i, r := range replicas {
			if !strings.Contains(r.proc.out.String(), "ACME: serving certificate") {
				return fmt.Errorf("replica %d does not serve it yet", i)
			}
		}
		return nil
	})
	if n := strings.Count(p.out.String(), "Issued certificate serial"); n != 1 {
		t.Errorf("Pebble issued %d certificates, want 1", n)
	}
	for i, r := range replicas {
		if out := r.proc.out.String(); !strings.Contains(out, "serial="+leaf.SerialNumber.Text(16)) {
			t.Errorf("replica %d does not serve serial %s", i, leaf.SerialNumber.Text(16))
		}
	}
}

// TestACMEFailureStatus: when the CA cannot validate (nothing answers on
// the port it fetches HTTP-01 from), the listener is not served, and
// `meshgate status` says why: the Gateway's ACMECertificates condition,
// reason ACMEFailed, with the CA's error, at the listener's file and line.
func TestACMEFailureStatus(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	p := startPebble(t, pebbleOptions{HTTPPort: portOf(freeAddr(t)), TLSPort: portOf(freeAddr(t))})
	c.policy("services.yaml", staticServices("alpha"))
	c.policy("gateway.yaml", acmeStartPolicy)
	c.app("alpha", "alpha", "v1", "")
	c.startControlPlane()
	c.gateway("edge", "--id", "gateway~edge~acme")
	c.policy("gateway.yaml", fmt.Sprintf(acmePolicy, p.directoryURL(), p.caFile, "http-01", "0.33"))
	var out string
	eventually(t, 60*time.Second, "status shows the ACME failure", func() error {
		var err error
		if out, err = c.cli("status"); err != nil {
			return err
		}
		if !strings.Contains(out, "ACMEFailed") || !strings.Contains(out, "urn:ietf:params:acme:error:connection") {
			return fmt.Errorf("status:\n%s", out)
		}
		return nil
	})
	if !strings.Contains(out, "gateway.yaml:") || !strings.Contains(out, "listener default/edge/shop") {
		t.Errorf("status does not name the listener's file and line:\n%s", out)
	}
	if _, err := acmeTLSDial(c.addr("gws"), "shop.acme.test", p.roots()); err == nil {
		t.Error("the listener without a certificate is served")
	}
}
