package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// syncStatus is what GET /status says of the control plane's first sync and
// of what it holds back.
type syncStatus struct {
	Version          string   `json:"version"`
	LastError        string   `json:"lastError"`
	Serving          bool     `json:"serving"`
	WaitingFor       []string `json:"waitingFor"`
	HeldPolicyChange *struct {
		Reason string `json:"reason"`
	} `json:"heldPolicyChange"`
	Proxies []struct {
		ID   string `json:"id"`
		Held string `json:"held"`
	} `json:"proxies"`
}

func (c *cluster) syncStatus() (*syncStatus, error) {
	var s syncStatus
	return &s, adminGet(c.admin, c.adminToken(), "/status", &s)
}

// TestControlPlaneRestartDuringConsulOutage: with the policy in files and
// the services in Consul, Consul stops, the control plane is killed and
// started again while Consul is still down, and Consul comes back a few
// seconds later. Under a looping client through the gateway and through a
// sidecar's outbound listener (a sidecar-to-sidecar hop), not one request
// fails: the restarted control plane pushes nothing while it waits for the
// catalog (it says so in /status and its log), then serves the complete
// configuration on its own once the catalog is back.
func TestControlPlaneRestartDuringConsulOutage(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", consulGateway)
	c.startControlPlane("--consul", consul.addr)
	ordersApp := c.app("orders-app", "orders", "v1", "")
	c.consulSidecar(consul, "orders", ordersApp, c.addr("orders-in"), c.addr("orders-out"))
	frontendOut := c.addr("frontend-out")
	frontendApp := c.app("frontend-app", "frontend", "v1", frontendOut)
	c.consulSidecar(consul, "frontend", frontendApp, c.addr("frontend-in"), frontendOut)
	c.gateway("edge")
	c.policy("routes.yaml", routeTo("orders"))
	gw := "http://" + c.addr("gw") + "/"
	hop := "http://" + frontendOut + "/"
	c.expectEventually("orders through the gateway", 15*time.Second, gw, nil, servedBy("orders"))
	c.expectEventually("orders through the frontend's sidecar", 15*time.Second, hop, []string{"Host: orders"}, servedBy("orders"))

	gwLoad := startLoad(t, gw, 1)
	hopLoad := startLoad(t, hop, 1, "Host: orders")
	t.Cleanup(func() { // reported however the test ends
		gwLoad.stop()
		hopLoad.stop()
		gwLoad.check(t)
		hopLoad.check(t)
		if t.Failed() {
			t.Logf("consul checks at the end:\n%s", consul.checks("orders", "frontend"))
		}
	})
	consul.stop()
	c.cp.kill()
	c.startControlPlane("--consul", consul.addr)
	// The outage itself, longer than the control plane's 5 s wait for the
	// catalog at start: not a synchronisation.
	time.Sleep(7 * time.Second)
	if st, err := c.syncStatus(); err != nil {
		t.Error(err)
	} else if st.Serving || !slices.Contains(st.WaitingFor, "consul catalog") {
		t.Errorf("during the outage: serving %v, waiting for %v; want not serving, waiting for the consul catalog", st.Serving, st.WaitingFor)
	}
	consul.start()
	eventually(t, 30*time.Second, "the control plane serves once consul is back", func() error {
		st, err := c.syncStatus()
		if err != nil {
			return err
		}
		if st.Version == "" || st.LastError != "" {
			return fmt.Errorf("version %q, last error %q", st.Version, st.LastError)
		}
		if len(st.Proxies) != 3 {
			return fmt.Errorf("%d proxies connected, want 3", len(st.Proxies))
		}
		if !st.Serving || len(st.WaitingFor) > 0 {
			return fmt.Errorf("serving %v, waiting for %v", st.Serving, st.WaitingFor)
		}
		return nil
	})
	// Traffic keeps flowing on the configuration the control plane now serves.
	n, m := gwLoad.total.Load(), hopLoad.total.Load()
	eventually(t, 10*time.Second, "traffic after the recovery", func() error {
		if gwLoad.total.Load() < n+100 || hopLoad.total.Load() < m+100 {
			return fmt.Errorf("%d and %d requests since", gwLoad.total.Load()-n, hopLoad.total.Load()-m)
		}
		return nil
	})
	c.expectEventually("orders through the gateway", 5*time.Second, gw, nil, servedBy("orders"))
	c.expectEventually("orders through the frontend's sidecar", 5*time.Second, hop, []string{"Host: orders"}, servedBy("orders"))
	if out := c.cp.out.String(); !strings.Contains(out, "not serving any configuration yet") || !strings.Contains(out, "consul catalog") {
		t.Errorf("the restarted control plane did not log what it waited for")
	}
}

// TestDestructivePolicyEditHeld: an editor truncating a policy file for a
// second before writing it again costs no request; a file left empty is
// applied once it has stayed so for the hold window (5 s by default), with a
// warning in the log.
func TestDestructivePolicyEditHeld(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("services.yaml", reloadServices)
	routes := c.policy("routes.yaml", routeTo("blue"))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("routed to blue", 10*time.Second, url, nil, servedBy("blue"))
	content, err := os.ReadFile(routes)
	if err != nil {
		t.Fatal(err)
	}
	load := startLoad(t, url, 2)
	eventually(t, 30*time.Second, "load running", func() error {
		if load.total.Load() < 50 {
			return fmt.Errorf("%d requests so far", load.total.Load())
		}
		return nil
	})

	// In place, as an editor that truncates before it writes.
	if err := os.WriteFile(routes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the editor's gap, not a synchronisation
	if err := os.WriteFile(routes, content, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the held truncation superseded by the restore", func() error {
		st, err := c.syncStatus()
		if err != nil {
			return err
		}
		if st.HeldPolicyChange != nil {
			return fmt.Errorf("still held: %s", st.HeldPolicyChange.Reason)
		}
		return nil
	})
	n := load.total.Load()
	eventually(t, 10*time.Second, "traffic after the restore", func() error {
		if load.total.Load() < n+100 {
			return fmt.Errorf("%d requests since", load.total.Load()-n)
		}
		return nil
	})
	load.stop()
	load.check(t)
	if out := c.cp.out.String(); !strings.Contains(out, "destructive policy change held") {
		t.Error("the truncation was not held (no warning in the log)")
	} else if strings.Contains(out, "applying a destructive policy change") {
		t.Error("the truncation was applied although the file was restored within the hold window")
	}

	if err := os.WriteFile(routes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.expectEventually("the emptied file applied after the hold window", 20*time.Second, url, nil, func(r *response) error {
		if r.status != 404 {
			return fmt.Errorf("status %d", r.status)
		}
		return nil
	})
	if out := c.cp.out.String(); !strings.Contains(out, "applying a destructive policy change") || !strings.Contains(out, "routes.yaml holds no document any more") {
		t.Errorf("no warning naming the emptied file when it was applied")
	}
}
