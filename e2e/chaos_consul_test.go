package e2e

import (
	"fmt"
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
	m := startChaosMesh(c, func(svc, app, inbound, outbound string) *proc {
		return c.consulSidecar(consul, svc, app, inbound, outbound)
	})
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
	c.consulSidecar(consul, "orders", app, c.addr("orders-v2-in"), c.addr("orders-v2-out"))
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
