package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// meshPolicy: frontend, orders and orders-v2 each behind a sidecar (their
// endpoints are the sidecars' inbound addresses), a gateway route to the
// frontend, and a mesh route (parent: Service orders) that sends calls
// carrying x-version: v2 to orders-v2.
func meshPolicy() string {
	return yamlDocs(edgeGateway, routeTo("frontend"), meshServices("frontend", "orders", "orders-v2"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: orders, port: 80}]
  rules:
    - matches: [{headers: [{name: x-version, value: v2}]}]
      backendRefs: [{name: orders-v2, port: 80}]
    - backendRefs: [{name: orders, port: 80}]
`)
}

// TestMeshCalls: external traffic enters the gateway and the frontend's
// sidecar; the frontend calls orders through its own sidecar's outbound
// listener, shaped by a mesh HTTPRoute.
func TestMeshCalls(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", meshPolicy())
	c.startControlPlane()
	gw := startMesh(c, c.sidecar, []string{"frontend", "orders", "orders-v2"}).gw
	frontendOut := c.addr("frontend-out")

	t.Run("gateway to frontend through its sidecar", func(t *testing.T) {
		c.expectEventually("frontend via gateway", 10*time.Second, gw+"/hello", nil, func(r *response) error {
			if err := servedBy("frontend")(r); err != nil {
				return err
			}
			// The gateway appended the client, the sidecar the gateway.
			if xff := r.reply.Headers["x-forwarded-for"]; xff != "127.0.0.1, 127.0.0.1" {
				return fmt.Errorf("x-forwarded-for %q: want two hops", xff)
			}
			return nil
		})
	})

	t.Run("service to service through sidecars", func(t *testing.T) {
		c.expectEventually("frontend calls orders", 10*time.Second, gw+"/call/orders/items", nil, func(r *response) error {
			if err := servedBy("frontend")(r); err != nil {
				return err
			}
			if r.reply.UpstreamStatus != http.StatusOK || r.reply.Upstream == nil || r.reply.Upstream.Service != "orders" {
				return fmt.Errorf("upstream: %d %+v", r.reply.UpstreamStatus, r.reply.Upstream)
			}
			if r.reply.Upstream.Path != "/items" {
				return fmt.Errorf("orders saw path %q", r.reply.Upstream.Path)
			}
			return nil
		})
	})

	t.Run("mesh route by header", func(t *testing.T) {
		r, err := get(gw+"/call/orders/items", "x-version: v2")
		if err != nil {
			t.Fatal(err)
		}
		if r.reply.Upstream == nil || r.reply.Upstream.Service != "orders-v2" {
			t.Fatalf("want orders-v2, got %d %.300s", r.status, r.body)
		}
	})

	t.Run("outbound as HTTP_PROXY (absolute-form request)", func(t *testing.T) {
		proxyURL, _ := url.Parse("http://" + frontendOut)
		pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		resp, err := pc.Get("http://orders-v2/direct")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Demo-Service") != "orders-v2" {
			t.Fatalf("via proxy: %d from %q", resp.StatusCode, resp.Header.Get("X-Demo-Service"))
		}
	})

	t.Run("unknown service through outbound is 404", func(t *testing.T) {
		r, err := get("http://"+frontendOut+"/x", "Host: nosuchservice")
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusNotFound {
			t.Fatalf("want 404, got %d %q", r.status, r.body)
		}
	})

	t.Run("control plane lists the proxies", func(t *testing.T) {
		s, err := c.status()
		if err != nil {
			t.Fatal(err)
		}
		roles := map[string]int{}
		for _, p := range s.Proxies {
			roles[p.Role]++
		}
		if roles["sidecar"] != 3 || roles["gateway"] != 1 {
			t.Fatalf("proxies by role %v, want 3 sidecars and 1 gateway", roles)
		}
	})
}
