package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane"
)

// TestChaosSidecarSigterm: orders has two instances, each an app behind a
// sidecar registered in Consul; one sidecar gets SIGTERM (the default drain
// delay) under load. Nothing is lost: it leaves Consul and fails its
// readiness first, serves on while the caller drops it, then closes its
// listeners and finishes what is in flight. Before that order, the
// listeners closed with the deregistration: one or two 503s per path.
func TestChaosSidecarSigterm(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "SIGTERM of one of two orders sidecars (Consul)")
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", chaosGatewayPolicy)
	c.startControlPlane("--consul", consul.addr)
	m := startChaosMesh(c, chaosConsulSidecar(c, consul))
	in2 := c.addr("orders-2-in")
	// The harness stops proxies with no delay; this one has the default.
	stopping := chaosConsulSidecar(c, consul, "--drain-delay", dataplane.DefaultDrainDelay.String())(
		"orders", c.app("orders-2-app", "orders", "v2", ""), in2, c.addr("orders-2-out"))
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
	m.startLoads(s)
	eventually(t, 30*time.Second, "instance 2 answering the caller", func() error {
		r, err := get(m.meshURL())
		if err != nil {
			return err
		}
		if r.reply.Upstream == nil || r.reply.Upstream.Version != "v2" {
			return fmt.Errorf("served by %+v", r.reply.Upstream)
		}
		return nil
	})

	s.beginFault()
	go stopping.stop() // SIGTERM
	eventually(t, 30*time.Second, "the stopped instance leaves the caller's endpoints", inRotation(false))
	left := time.Since(s.faultStart)
	eventually(t, 60*time.Second, "the stopped sidecar exits", func() error {
		if !stopping.exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	s.endFault()
	s.notef("the instance left the caller's endpoints %s after SIGTERM; the sidecar exited after %s",
		left.Round(100*time.Millisecond), s.faultEnd.Sub(s.faultStart).Round(100*time.Millisecond))
	// The order, from the stopped sidecar's own log.
	out := stopping.out.String()
	deregistered, closing := strings.Index(out, "deregistered from consul"), strings.Index(out, "closing listeners")
	if deregistered < 0 || closing < 0 || deregistered > closing {
		t.Errorf("stopped sidecar: deregistration at %d, listeners closing at %d in its log; want the deregistration first", deregistered, closing)
	} else {
		s.notef("deregistered from Consul before its listeners closed")
	}
	s.finish()
}

// TestChaosSlowConnections: a flood of connections that send nothing (2500
// at the quick level, 10,000 above it) is opened to a gateway whose
// listener holds at most 1000 (5000) and kept open for the fault
// duration, beside the normal load: no normal request fails (idle
// connections make room for new ones, oldest first), the gateway's
// resident memory grows by a bounded amount, and at least a third of that
// is given back once the flood closes (60-70 % measured).
func TestChaosSlowConnections(t *testing.T) {
	t.Parallel()
	flood, limit := 2500, 1000
	if level, _ := chaosLevelFromEnv(); level.name != "quick" {
		flood, limit = 10000, 5000
	}
	s := newChaos(t, fmt.Sprintf("%d idle connections to the gateway (limit %d)", flood, limit))
	c := newCluster(t)
	c.policy("mesh.yaml", chaosGatewayPolicy+chaosStaticServices)
	c.policy("routes.yaml", chaosRoutes("0", false))
	c.startControlPlane()
	m := startChaosMeshGateway(c, c.sidecar, "--max-connections", strconv.Itoa(limit))
	m.waitServing(t)
	admin := c.addr("gateway-admin-edge")
	pid := m.gateway.cmd.Process.Pid
	m.startLoads(s)
	rssBefore := anonRSS(t, pid)

	s.beginFault()
	conns := dialAll(t, c.addr("gw"), flood)
	eventually(t, 60*time.Second, "the gateway at its limit", func() error {
		st, err := readProxyConnStats(admin)
		if err != nil {
			return err
		}
		if a, _ := st.total(); a != limit || st.Reclaimed < int64(flood-limit) {
			return fmt.Errorf("%d open, %d reclaimed", a, st.Reclaimed)
		}
		return nil
	})
	rssFlood := anonRSS(t, pid)
	s.hold()
	closeAll(conns)
	s.endFault()
	grown := rssFlood - rssBefore
	if grown > int64(limit)*maxRSSPerHeldConn {
		t.Errorf("the gateway's resident memory grew by %d B per held connection; want at most %d", grown/int64(limit), maxRSSPerHeldConn)
	}
	eventually(t, 60*time.Second, "memory given back", func() error {
		st, err := readProxyConnStats(admin)
		if err != nil {
			return err
		}
		if st.Releases < 1 {
			return fmt.Errorf("no release yet")
		}
		if rss := anonRSS(t, pid); rss-rssBefore > grown*2/3 {
			return fmt.Errorf("resident %.1f MiB, %.1f MiB before", float64(rss)/(1<<20), float64(rssBefore)/(1<<20))
		}
		return nil
	})
	st, err := readProxyConnStats(admin)
	if err != nil {
		t.Fatal(err)
	}
	s.notef("gateway anonymous RSS %.1f MiB before, %.1f MiB with the flood (%d B per held connection), %.1f MiB after; %d reclaimed, %d shed",
		float64(rssBefore)/(1<<20), float64(rssFlood)/(1<<20), grown/int64(limit), float64(anonRSS(t, pid))/(1<<20), st.Reclaimed, st.Overflow)
	s.finish()
}

// startChaosMeshGateway is startChaosMesh with extra flags for the gateway.
func startChaosMeshGateway(c *cluster, sidecar func(svc, app, inbound, outbound string) *proc, gatewayFlags ...string) *chaosMesh {
	c.t.Helper()
	m := &chaosMesh{c: c, sidecars: map[string]*proc{}}
	ordersApp := c.app("orders-app", "orders", "v1", "")
	frontendOut := c.addr("frontend-out")
	frontendApp := c.app("frontend-app", "frontend", "v1", frontendOut)
	m.sidecars["orders"] = sidecar("orders", ordersApp, c.addr("orders-in"), c.addr("orders-out"))
	m.sidecars["frontend"] = sidecar("frontend", frontendApp, c.addr("frontend-in"), frontendOut)
	admin := c.addr("gateway-admin-edge")
	m.gateway = start(c.t, "gateway edge", append([]string{"gateway", "--name", "edge", "--xds", c.xds, "--admin", admin,
		"--token", c.token("edge"), "--log-level", "debug"}, gatewayFlags...)...)
	c.waitReady(admin)
	m.gw, m.frontendApp = "http://"+c.addr("gw"), "http://"+frontendApp
	return m
}
