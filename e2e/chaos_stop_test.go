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
	consul, c, m := startChaosConsul(t)
	// The harness stops proxies with no delay; this one has the default.
	second := c.startInstance(chaosConsulSidecar(c, consul, "--drain-delay", dataplane.DefaultDrainDelay.String()), "orders-2", "orders", "v2")
	stopping := second.sidecar
	inRotation := func(want bool) func() error { return endpointListed(m.sidecarAdmin("frontend"), second.inbound, want) }
	eventually(t, 30*time.Second, "both orders instances in the caller's endpoints", inRotation(true))
	m.startLoads(s)
	eventually(t, 30*time.Second, "instance 2 answering the caller", func() error {
		return probe(m.meshURL(), upstreamVersion("orders", "v2"))
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
	c, m := startChaosFiles(t, "", "--max-connections", strconv.Itoa(limit))
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
