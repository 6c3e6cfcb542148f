package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestEndpointLossHeld: the only instance of orders fails its Consul check
// (its app dies behind a live sidecar), so the catalog alone would take
// every endpoint from the gateway. The control plane holds that push: the
// gateway keeps its endpoint, and /status and `meshgate proxies` say why.
// When the app comes back the hold is released by the next configuration.
// When it dies again and the operator then changes the policy, the change
// is the operator's intent: the gateway gets the configuration, without the
// endpoint.
func TestEndpointLossHeld(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", edgeGateway)
	c.startControlPlane("--consul", consul.addr)
	probe := []string{"--app-health-interval", "200ms", "--app-health-timeout", "500ms"}
	app, appProc := c.startApp("orders-app", "orders", "v1", "")
	in := c.addr("orders-in")
	c.consulSidecar(consul, "orders", app, in, c.addr("orders-out"), probe...)
	c.gateway("edge")
	c.policy("routes.yaml", routeTo("orders"))
	gw := "http://" + c.addr("gw") + "/"
	gwAdmin := c.addr("gateway-admin-edge")
	c.expectEventually("orders through the gateway", 15*time.Second, gw, nil, servedBy("orders"))

	gatewayHeld := func() (string, error) {
		st, err := c.syncStatus()
		if err != nil {
			return "", err
		}
		for _, p := range st.Proxies {
			if strings.HasPrefix(p.ID, "gateway~edge") {
				return p.Held, nil
			}
		}
		return "", fmt.Errorf("the gateway is not connected")
	}
	hasOrders := func() (bool, error) {
		dump, err := proxyConfigDump(gwAdmin)
		if err != nil {
			return false, err
		}
		return hasEndpoint(dump, in), nil
	}

	// The app dies: its instance turns critical, and the gateway's push is held.
	appProc.kill()
	eventually(t, 20*time.Second, "the gateway's push held", func() error {
		held, err := gatewayHeld()
		if err != nil {
			return err
		}
		if !strings.Contains(held, "every endpoint") {
			return fmt.Errorf("held %q", held)
		}
		return nil
	})
	if ok, err := hasOrders(); err != nil || !ok {
		t.Errorf("while held, the gateway's endpoints lost orders at %s (%v)", in, err)
	}
	out, err := c.cli("proxies")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "every endpoint") {
		t.Errorf("meshgate proxies does not show the held gateway:\n%s", out)
	}
	if cp := c.cp.out.String(); !strings.Contains(cp, "configuration held") {
		t.Errorf("the control plane did not log the held configuration")
	}

	// The app comes back: the next configuration has the endpoint, and the hold is gone.
	_, appProc = c.startApp("orders-app", "orders", "v1", "")
	eventually(t, 20*time.Second, "the hold released", func() error {
		held, err := gatewayHeld()
		if err != nil {
			return err
		}
		if held != "" {
			return fmt.Errorf("still held: %q", held)
		}
		return nil
	})
	c.expectEventually("orders through the gateway again", 15*time.Second, gw, nil, servedBy("orders"))

	// It dies again; the operator then edits the policy: that releases the
	// hold, and the gateway gets the configuration without the endpoint.
	appProc.kill()
	eventually(t, 20*time.Second, "the gateway's push held again", func() error {
		held, err := gatewayHeld()
		if err != nil {
			return err
		}
		if held == "" {
			return fmt.Errorf("not held")
		}
		return nil
	})
	c.policy("routes.yaml", routeTo("orders")+"  # edited by the operator\n")
	eventually(t, 20*time.Second, "a policy change releases the hold", func() error {
		held, err := gatewayHeld()
		if err != nil {
			return err
		}
		if held != "" {
			return fmt.Errorf("still held: %q", held)
		}
		if ok, err := hasOrders(); err != nil || ok {
			return fmt.Errorf("the gateway still has the endpoint %s (%v)", in, err)
		}
		return nil
	})
}
