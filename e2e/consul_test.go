package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulRoutes splits by version the way the Gateway API can: v2 is its own
// Consul service (orders-v2), chosen by a header.
const consulRoutes = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{headers: [{name: x-version, value: v2}]}]
      backendRefs: [{name: orders-v2, port: 80}]
    - backendRefs: [{name: orders, port: 80}]
`

// proxyConfigDump is a proxy's applied configuration, as text without
// whitespace (protojson spaces vary).
func proxyConfigDump(admin string) (string, error) {
	resp, err := client.Get("http://" + admin + "/config_dump")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.Join(strings.Fields(string(b)), ""), err
}

// hasEndpoint reports whether a config dump has an endpoint at addr.
func hasEndpoint(dump, addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	return strings.Contains(dump, `"portValue":`+port+`}`) || strings.Contains(dump, `"port_value":`+port+`}`)
}

// endpointListed is a condition for eventually: the proxy at admin has
// (want) or has not an endpoint at addr in its applied configuration.
func endpointListed(admin, addr string, want bool) func() error {
	return func() error {
		dump, err := proxyConfigDump(admin)
		if err != nil {
			return err
		}
		if hasEndpoint(dump, addr) != want {
			return fmt.Errorf("endpoint %s in the configuration of the proxy at %s: %v, want %v", addr, admin, !want, want)
		}
		return nil
	}
}

// TestConsulDiscovery: services come from a real Consul catalog. Sidecars
// register themselves (labels as tags, the app registration ignored);
// traffic follows registrations, deregistrations and health flips (the flip
// latency is logged); a static Service named like a Consul one is rejected
// with an error naming both; a stopped sidecar deregisters.
func TestConsulDiscovery(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)

	v1App := c.app("orders-v1-app", "orders", "v1", "")
	v2App := c.app("orders-v2-app", "orders-v2", "v2", "")
	c.consulSidecar(consul, "orders", v1App, c.addr("orders-v1-in"), c.addr("orders-v1-out"), "--label", "version=v1", "--register-app")
	v2Sidecar := c.consulSidecar(consul, "orders-v2", v2App, c.addr("orders-v2-in"), c.addr("orders-v2-out"), "--label", "version=v2")
	c.gateway("edge")
	c.policy("routes.yaml", consulRoutes)

	gw := "http://" + c.addr("gw") + "/"
	c.expectEventually("v1 through the gateway", 15*time.Second, gw, nil, servedBy("orders"))
	c.expectEventually("v2 by header", 15*time.Second, gw, []string{"x-version: v2"}, servedBy("orders-v2"))

	gwAdmin := c.addr("gateway-admin-edge")
	t.Run("labels and the app registration", func(t *testing.T) {
		dump, err := proxyConfigDump(gwAdmin)
		if err != nil {
			t.Fatal(err)
		}
		// The sidecar's inbound address is the endpoint, with its tag as a
		// label; the app registered beside it is not.
		if !hasEndpoint(dump, c.addr("orders-v2-in")) || !strings.Contains(dump, `"version":"v2"`) {
			t.Errorf("gateway config lacks orders-v2's sidecar endpoint or its version label")
		}
		if hasEndpoint(dump, v1App) {
			t.Errorf("gateway config routes to the app registration %s, want its sidecar only", v1App)
		}
		entries, err := consul.instances(context.Background(), "orders")
		if err != nil || len(entries) != 2 {
			t.Errorf("want the sidecar and the app registered for orders, got %d (%v)", len(entries), err)
		}
	})

	t.Run("register, health flip, deregister", func(t *testing.T) {
		// A plain (non-mesh) instance with a TTL check the test drives.
		v3App := c.app("orders-v3-app", "orders", "v3", "")
		host, portStr, _ := net.SplitHostPort(v3App)
		port, _ := strconv.Atoi(portStr)
		agent := consul.client.Agent()
		reg := &api.AgentServiceRegistration{ID: "orders-v3", Name: "orders", Address: host, Port: port, Tags: []string{"version=v3"},
			Check: &api.AgentServiceCheck{CheckID: "orders-v3-ttl", TTL: "10m", Status: api.HealthPassing}}
		if err := agent.ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "traffic reaches the registered v3", func() error {
			r, err := get(gw)
			if err != nil {
				return err
			}
			if dump, err := proxyConfigDump(gwAdmin); err != nil || !hasEndpoint(dump, v3App) {
				return fmt.Errorf("v3 not in the gateway config yet (%v)", err)
			}
			if r.reply.Version != "v3" {
				return fmt.Errorf("served by %s %s", r.reply.Service, r.reply.Version)
			}
			return nil
		})

		// Health flip: measured from Consul reporting it critical to the
		// gateway proxy having applied the removal.
		if err := agent.UpdateTTL("orders-v3-ttl", "failing on purpose", api.HealthCritical); err != nil {
			t.Fatal(err)
		}
		flipped := time.Now()
		eventually(t, 30*time.Second, "the health flip applied by the gateway", endpointListed(gwAdmin, v3App, false))
		t.Logf("health flip reached the gateway proxy in %s (target 200ms)", time.Since(flipped).Round(time.Millisecond))
		for range 20 {
			r, err := get(gw)
			if err != nil || r.status != http.StatusOK || r.reply.Version != "v1" {
				t.Fatalf("after the flip want 200 from v1, got %v %+v", err, r)
			}
		}

		if err := agent.UpdateTTL("orders-v3-ttl", "", api.HealthPassing); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "v3 back after passing", endpointListed(gwAdmin, v3App, true))
		if err := agent.ServiceDeregister("orders-v3"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "v3 gone after deregistration", endpointListed(gwAdmin, v3App, false))
	})

	t.Run("a crashed sidecar is removed by its health check", func(t *testing.T) {
		// A second orders instance whose sidecar dies without deregistering.
		app := c.app("orders-crash-app", "orders", "v1", "")
		in := c.addr("orders-crash-in")
		crashing := c.consulSidecar(consul, "orders", app, in, c.addr("orders-crash-out"), "--label", "version=v1")
		eventually(t, 10*time.Second, "second instance in the gateway config", endpointListed(gwAdmin, in, true))
		crashing.kill()
		eventually(t, 15*time.Second, "the crashed instance leaves the gateway config", endpointListed(gwAdmin, in, false))
		for range 20 {
			r, err := get(gw)
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("after the crash: %v %+v", err, r)
			}
		}
	})

	t.Run("static Service with a Consul service's name", func(t *testing.T) {
		c.policy("clash.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders-v2}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "127.0.0.1:1"}]
`)
		eventually(t, 10*time.Second, "clash rejected", func() error {
			st, err := c.status()
			if err != nil {
				return err
			}
			if !strings.Contains(st.LastError, "clash.yaml") || !strings.Contains(st.LastError, "consul:catalog/orders-v2") {
				return fmt.Errorf("last error %q does not name both definitions", st.LastError)
			}
			return nil
		})
		c.expectEventually("old model keeps serving", 5*time.Second, gw, []string{"x-version: v2"}, servedBy("orders-v2"))
		c.removePolicy("clash.yaml")
		eventually(t, 10*time.Second, "error cleared", func() error {
			st, err := c.status()
			if err != nil {
				return err
			}
			if st.LastError != "" {
				return fmt.Errorf("last error %q", st.LastError)
			}
			return nil
		})
	})

	t.Run("a stopped sidecar deregisters", func(t *testing.T) {
		v2Sidecar.stop()
		eventually(t, 10*time.Second, "orders-v2 deregistered", func() error {
			entries, err := consul.instances(context.Background(), "orders-v2")
			if err != nil {
				return err
			}
			if len(entries) > 0 {
				return fmt.Errorf("%d instances left", len(entries))
			}
			return nil
		})
	})
}
