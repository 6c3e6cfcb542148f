package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestChaosConsulOutage: the control plane takes services from Consul
// (policy from files) and the sidecars register themselves. Consul is
// stopped for the level's fault duration and started again under load at the
// gateway and on a sidecar→sidecar hop: no request fails (the control plane
// keeps the services it knew, the proxies their config), and an instance
// registered after the outage gets traffic.
func TestChaosConsulOutage(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "Consul stopped and restarted (files + Consul discovery)")
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", chaosGatewayPolicy)
	c.startControlPlane("--consul", consul.addr)
	m := startChaosMesh(c, chaosConsulSidecar(c, consul))
	// The routes name Consul services: written once they are registered.
	c.policy("routes.yaml", chaosRoutes("0", false))
	m.waitServing(t)
	m.startLoads(s)

	s.beginFault()
	consul.stop()
	// Its ports: HTTP, serf LAN and WAN (TCP and UDP), server RPC.
	held := holdPorts(t, consul.ports, consul.ports[1], consul.ports[2])
	s.hold()
	held.release()
	consul.start()
	s.endFault()

	app := c.app("orders-v2-app", "orders", "v2", "")
	chaosConsulSidecar(c, consul)("orders", app, c.addr("orders-v2-in"), c.addr("orders-v2-out"))
	eventually(t, 30*time.Second, "an instance registered after the outage gets traffic", func() error {
		r, err := get(m.meshURL())
		if err != nil {
			return err
		}
		if r.reply.Upstream == nil || r.reply.Upstream.Version != "v2" {
			return fmt.Errorf("served by %+v", r.reply.Upstream)
		}
		return nil
	})
	s.notef("an instance registered after the outage got traffic %s after Consul was back",
		time.Since(s.faultEnd).Round(100*time.Millisecond))
	s.finish()
}

// TestChaosControlPlaneRestartDuringConsulOutage: policy from files,
// services from Consul. Consul is stopped, the control plane SIGKILLed and
// started again while Consul is still down, and Consul started at least
// 10 s later, under load at the gateway and on a sidecar→sidecar hop: no
// request fails. The restarted control plane pushes nothing while it waits
// for the catalog (its /status says so), then serves on its own once
// Consul is back, and a policy edit reaches the proxies.
func TestChaosControlPlaneRestartDuringConsulOutage(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "Consul stopped, control plane SIGKILLed and restarted, Consul started ≥ 10 s later (files + Consul discovery)")
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", chaosGatewayPolicy)
	c.startControlPlane("--consul", consul.addr)
	m := startChaosMesh(c, chaosConsulSidecar(c, consul))
	c.policy("routes.yaml", chaosRoutes("0", false))
	m.waitServing(t)
	m.startLoads(s)

	s.beginFault()
	consul.stop()
	held := holdPorts(t, consul.ports, consul.ports[1], consul.ports[2])
	c.cp.kill()
	c.startControlPlane("--consul", consul.addr)
	// The outage, at least 10 s: longer than the control plane's wait for
	// the catalog at start.
	if d := max(10*time.Second, s.level.fault) - time.Since(s.faultStart); d > 0 {
		time.Sleep(d)
	}
	st, err := c.syncStatus()
	if err != nil {
		t.Fatal(err)
	}
	if st.Serving || !slices.Contains(st.WaitingFor, "consul catalog") {
		t.Errorf("while Consul is down: serving %v, waiting for %v; want not serving, waiting for the consul catalog", st.Serving, st.WaitingFor)
	} else {
		s.notef("while Consul was down the restarted control plane pushed nothing (waiting for %s)", strings.Join(st.WaitingFor, ", "))
	}
	held.release()
	consul.start()
	s.endFault()

	eventually(t, 30*time.Second, "the control plane serves once Consul is back", func() error {
		st, err := c.syncStatus()
		if err != nil {
			return err
		}
		if !st.Serving || len(st.WaitingFor) > 0 || st.LastError != "" {
			return fmt.Errorf("serving %v, waiting for %v, last error %q", st.Serving, st.WaitingFor, st.LastError)
		}
		if len(st.Proxies) != 3 {
			return fmt.Errorf("%d proxies connected, want 3", len(st.Proxies))
		}
		return nil
	})
	s.notef("serving again %s after Consul was back", time.Since(s.faultEnd).Round(100*time.Millisecond))
	c.policy("routes.yaml", chaosRoutes("after-outage", false))
	took := m.waitEdit(t, 15*time.Second, "after-outage", false)
	s.notef("an edit after the outage served in %s", took.Round(100*time.Millisecond))
	s.finish()
}

// TestChaosAppKilledBehindSidecar: orders has two instances, each an app
// behind a sidecar registered in Consul that probes its app. The app of one
// is SIGKILLed (its sidecar lives on) for the level's fault duration, then
// started again. The caller's sidecar→sidecar path loses requests only
// until the instance leaves rotation (its Consul check turns critical):
// it recovers within 10 s of the kill, and none fails after. The gateway
// path, which does not reach orders, loses nothing. The restarted app's
// instance returns to rotation.
func TestChaosAppKilledBehindSidecar(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "the app of one of two orders instances SIGKILLed, its sidecar alive (Consul)")
	s.recoverFromStart = true
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", chaosGatewayPolicy)
	c.startControlPlane("--consul", consul.addr)
	sidecar := chaosConsulSidecar(c, consul) // the app probed at the default interval too
	m := startChaosMesh(c, sidecar)
	app2, app2Proc := startDemoApp(c, "orders-2-app", "orders", "v2")
	in2 := c.addr("orders-2-in")
	sidecar("orders", app2, in2, c.addr("orders-2-out"))
	c.policy("routes.yaml", chaosRoutes("0", false))
	m.waitServing(t)
	callerAdmin := c.addr("sidecar-admin-" + c.addr("frontend-in"))
	inRotation := func(want bool) func() error {
		return func() error {
			dump, err := proxyConfigDump(callerAdmin)
			if err != nil {
				return err
			}
			if hasEndpoint(dump, in2) != want {
				return fmt.Errorf("instance 2 (%s) in the caller's endpoints: %v, want %v", in2, !want, want)
			}
			return nil
		}
	}
	eventually(t, 30*time.Second, "both orders instances in the caller's endpoints", inRotation(true))
	_, mesh := m.startLoads(s)
	const window = 10 * time.Second // a probe, a check and a push (≈ 2 s), with room for a loaded machine
	mesh.maxRecovery = window
	mesh.maxFailed = int64(s.level.rate) * int64(window/time.Second) // at worst every request of the window

	s.beginFault()
	app2Proc.kill()
	eventually(t, 30*time.Second, "the dead app's instance leaves the caller's endpoints", inRotation(false))
	s.notef("the dead app's instance left the caller's endpoints %s after the kill", time.Since(s.faultStart).Round(100*time.Millisecond))
	s.hold()
	startDemoApp(c, "orders-2-app", "orders", "v2")
	s.endFault()
	eventually(t, 30*time.Second, "the instance returns to the caller's endpoints", inRotation(true))
	eventually(t, 30*time.Second, "the restarted app answers through the sidecars", func() error {
		r, err := get(m.meshURL())
		if err != nil {
			return err
		}
		if r.reply.Upstream == nil || r.reply.Upstream.Version != "v2" {
			return fmt.Errorf("served by %+v", r.reply.Upstream)
		}
		return nil
	})
	s.notef("back in rotation and answering %s after the app restarted", time.Since(s.faultEnd).Round(100*time.Millisecond))
	s.finish()
}
