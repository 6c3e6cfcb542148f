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
// registered after the outage gets traffic, from the caller's sidecar and
// from the gateway, without restarting anything.
func TestChaosConsulOutage(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "Consul stopped and restarted (files + Consul discovery)")
	consul, c, m := startChaosConsul(t)
	// The gateway routes /orders to orders too, so that the instance
	// registered after the outage must reach its configuration as well.
	c.policy("orders-route.yaml", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-edge}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /orders}}]
      backendRefs: [{name: orders, port: 80}]
`)
	eventually(t, 30*time.Second, "the gateway routes /orders to orders", func() error { return probe(m.gw+"/orders", replyFrom("orders")) })
	m.startLoads(s)

	s.beginFault()
	consul.stop()
	// Its ports: HTTP, serf LAN and WAN (TCP and UDP), server RPC.
	held := holdPorts(t, consul.ports, consul.ports[1], consul.ports[2])
	s.hold()
	held.release()
	consul.start()
	s.endFault()

	c.startInstance(chaosConsulSidecar(c, consul), "orders-v2", "orders", "v2")
	eventually(t, 30*time.Second, "an instance registered after the outage gets traffic from the caller's sidecar", func() error {
		return probe(m.meshURL(), upstreamVersion("orders", "v2"))
	})
	eventually(t, 30*time.Second, "an instance registered after the outage gets traffic from the gateway", func() error {
		return probe(m.gw+"/orders", replyVersion("orders", "v2"))
	})
	s.notef("an instance registered after the outage got traffic from the caller's sidecar and the gateway %s after Consul was back",
		time.Since(s.faultEnd).Round(100*time.Millisecond))
	s.finish()
}

// TestChaosControlPlaneRestartDuringConsulOutage: policy from files,
// services from Consul. Consul is stopped, the control plane SIGKILLed and
// started again while Consul is still down, and Consul started at least
// 10 s later, under load at the gateway and on a sidecar→sidecar hop: no
// request fails. The restarted control plane pushes nothing while it waits
// for the catalog (its /status and its log say so), then serves on its own
// once Consul is back: traffic flows on the configuration it serves, and a
// policy edit reaches the proxies.
func TestChaosControlPlaneRestartDuringConsulOutage(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "Consul stopped, control plane SIGKILLed and restarted, Consul started ≥ 10 s later (files + Consul discovery)")
	consul, c, m := startChaosConsul(t)
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
		if !st.Serving || len(st.WaitingFor) > 0 || st.Version == "" || st.LastError != "" {
			return fmt.Errorf("serving %v, waiting for %v, version %q, last error %q", st.Serving, st.WaitingFor, st.Version, st.LastError)
		}
		if len(st.Proxies) != 3 {
			return fmt.Errorf("%d proxies connected, want 3", len(st.Proxies))
		}
		return nil
	})
	serving := time.Now()
	s.notef("serving again %s after Consul was back", serving.Sub(s.faultEnd).Round(100*time.Millisecond))
	if out := c.cp.out.String(); !strings.Contains(out, "not serving any configuration yet") || !strings.Contains(out, "consul catalog") {
		t.Errorf("the restarted control plane did not log that it served nothing while it waited for the consul catalog")
	}
	s.waitTraffic("traffic on both paths once the control plane serves again", serving, 100)
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
	consul, c, m := startChaosConsul(t)
	// Its app probed at the default interval too.
	second := c.startInstance(chaosConsulSidecar(c, consul), "orders-2", "orders", "v2")
	inRotation := func(want bool) func() error { return endpointListed(m.sidecarAdmin("frontend"), second.inbound, want) }
	eventually(t, 30*time.Second, "both orders instances in the caller's endpoints", inRotation(true))
	_, mesh := m.startLoads(s)
	const window = 10 * time.Second // a probe, a check and a push (≈ 2 s), with room for a loaded machine
	mesh.maxRecovery = window
	mesh.maxFailed = int64(s.level.rate) * int64(window/time.Second) // at worst every request of the window

	s.beginFault()
	second.appProc.kill()
	eventually(t, 30*time.Second, "the dead app's instance leaves the caller's endpoints", inRotation(false))
	s.notef("the dead app's instance left the caller's endpoints %s after the kill", time.Since(s.faultStart).Round(100*time.Millisecond))
	s.hold()
	second.restartApp()
	s.endFault()
	eventually(t, 30*time.Second, "the instance returns to the caller's endpoints", inRotation(true))
	eventually(t, 30*time.Second, "the restarted app answers through the sidecars", func() error {
		return probe(m.meshURL(), upstreamVersion("orders", "v2"))
	})
	s.notef("back in rotation and answering %s after the app restarted", time.Since(s.faultEnd).Round(100*time.Millisecond))
	s.finish()
}
