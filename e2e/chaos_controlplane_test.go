package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestChaosControlPlaneKill: the control plane (files) is SIGKILLed and
// stays dead for the level's fault duration under load at the gateway and on
// a sidecar→sidecar hop: no request fails and no proxy exits. The routes
// are edited while it is down; once it is started again the proxies
// reconnect and take that edit, and an edit made after the restart reaches
// both paths too.
func TestChaosControlPlaneKill(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "control plane SIGKILL (files)")
	c, m := startChaosFiles(t, "")
	m.startLoads(s)

	s.beginFault()
	c.cp.kill()
	held := holdPorts(t, []int{addrPort(t, c.xds), addrPort(t, c.admin)})
	c.policy("routes.yaml", chaosRoutes("while-down", true))
	s.hold()
	for name, p := range m.proxies() {
		if p.exited() {
			t.Fatalf("the %s exited while the control plane was down", name)
		}
	}
	s.endFault()

	held.release()
	c.startControlPlane()
	restarted := time.Now()
	eventually(t, 30*time.Second, "every proxy reconnected", func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		if len(st.Proxies) != 3 {
			return fmt.Errorf("%d proxies connected, want 3", len(st.Proxies))
		}
		return nil
	})
	s.notef("proxies reconnected %s after the restart", time.Since(s.faultEnd).Round(100*time.Millisecond))
	m.waitEdit(t, 15*time.Second, "while-down", true)
	s.notef("the edit made while it was down served on both paths %s after the restart", time.Since(restarted).Round(100*time.Millisecond))
	c.policy("routes.yaml", chaosRoutes("after-restart", true))
	took := m.waitEdit(t, 15*time.Second, "after-restart", true)
	s.notef("an edit after the restart served on both paths in %s", took.Round(100*time.Millisecond))
	s.finish()
}

// TestChaosControlPlaneFailover: two control planes share one Consul
// (state and policy in KV); proxies know both. The one serving the proxies
// is SIGKILLed: they fail over to the other, which serves an edit applied
// during the outage, and no request fails. The killed one is started again
// and compiles the same model.
func TestChaosControlPlaneFailover(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "1 of 2 control planes SIGKILL (Consul)")
	consul := startConsul(t)
	c := newCluster(t)
	replicas, token := startReplicas(t, c, consul, 2)
	apply := func(edit string) {
		t.Helper()
		c.applyToConsul(consul, yamlDocs(edgeGateway, meshServices("frontend", "orders"), chaosRoutes(edit, true)))
	}
	apply("0")
	waitSameModel(t, replicas, token)
	m := startChaosMesh(c, c.sidecar)
	m.waitServing(t)
	m.startLoads(s)

	// The replica serving the most proxies is the victim.
	victim, connected := -1, 0
	eventually(t, 15*time.Second, "every proxy connected to a replica", func() error {
		victim, connected = -1, 0
		most := 0
		for i, r := range replicas {
			st, err := r.status(token)
			if err != nil {
				return err
			}
			connected += len(st.Proxies)
			if len(st.Proxies) > most {
				victim, most = i, len(st.Proxies)
			}
		}
		if connected != 3 {
			return fmt.Errorf("%d proxies connected, want 3", connected)
		}
		return nil
	})
	survivor := replicas[1-victim]

	s.beginFault()
	replicas[victim].proc.kill()
	held := holdPorts(t, []int{addrPort(t, replicas[victim].xds), addrPort(t, replicas[victim].admin)})
	eventually(t, 30*time.Second, "every proxy on the surviving replica", func() error {
		st, err := survivor.status(token)
		if err != nil {
			return err
		}
		if len(st.Proxies) != 3 {
			return fmt.Errorf("%d proxies on the survivor, want 3", len(st.Proxies))
		}
		return nil
	})
	s.notef("proxies failed over in %s", time.Since(s.faultStart).Round(100*time.Millisecond))
	apply("during-outage")
	took := m.waitEdit(t, 15*time.Second, "during-outage", true)
	s.notef("an edit applied during the outage served on both paths in %s", took.Round(100*time.Millisecond))
	s.hold()
	held.release()
	replicas[victim].start(t, fmt.Sprintf("controlplane-%d", victim))
	s.endFault()
	waitSameModel(t, replicas, token)
	s.notef("the restarted replica compiles the same model")
	s.finish()
}
