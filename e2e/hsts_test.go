package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestHSTS: an HTTPS listener with tls.options meshgate.dev/hsts answers
// with Strict-Transport-Security (replacing none the backend sent); the
// plaintext listener routing to the same backend sends none, as RFC 6797
// requires.
func TestHSTS(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	shop := newTestCertificate(t, "shop", "shop.test")
	c.policy("services.yaml", staticServices("alpha"))
	c.policy("gateway.yaml", yamlDocs(tlsSecret("shop-cert", shop), `
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
      tls:
        certificateRefs: [{name: shop-cert}]
        options: {meshgate.dev/hsts: "max-age=31536000; includeSubDomains"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: alpha, port: 80}]
`))
	c.app("alpha", "alpha", "v1", "")
	c.startControlPlane()
	c.gateway("edge")

	cl := httpsClient("shop.test", shop.pool, false)
	eventually(t, 15*time.Second, "HSTS on HTTPS", func() error {
		req, err := http.NewRequest(http.MethodGet, "https://"+c.addr("gws")+"/", nil)
		if err != nil {
			return err
		}
		req.Host = "shop.test"
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); resp.StatusCode != http.StatusOK || got != "max-age=31536000; includeSubDomains" {
			return fmt.Errorf("status %d, Strict-Transport-Security %q", resp.StatusCode, got)
		}
		return nil
	})
	c.expectEventually("no HSTS on HTTP", 15*time.Second, "http://"+c.addr("gw")+"/", []string{"Host: shop.test"}, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("status %d", r.status)
		}
		if v, ok := r.header["Strict-Transport-Security"]; ok {
			return fmt.Errorf("Strict-Transport-Security %q on plain HTTP", v)
		}
		return nil
	})
}
