package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestChaosControlPlaneKill: the control plane (files) is SIGKILLed and
// stays dead for the level's fault duration under load at the gateway and on
// a sidecar→sidecar hop: no request fails. Once it is started again the
// proxies reconnect and a policy edit reaches both paths.
func TestChaosControlPlaneKill(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "control plane SIGKILL (files)")
	c := newCluster(t)
	c.policy("services.yaml", chaosGatewayPolicy+chaosStaticServices)
	c.policy("routes.yaml", chaosRoutes("0", true))
	c.startControlPlane()
	m := startChaosMesh(c, c.sidecar)
	m.waitServing(t)
	m.startLoads(s)

	s.beginFault()
	c.cp.kill()
	held := holdPorts(t, []int{addrPort(t, c.xds), addrPort(t, c.admin)})
	s.hold()
	for name, p := range map[string]*proc{"gateway": m.gateway, "frontend sidecar": m.sidecars["frontend"], "orders sidecar": m.sidecars["orders"]} {
		if p.exited() {
			t.Fatalf("the %s exited while the control plane was down", name)
		}
	}
	s.endFault()

	held.release()
	c.startControlPlane()
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
	replicas, token := startReplicas(t, consul, 2)
	// The cluster's proxies know both replicas; its CLI talks to the first.
	c.xds = replicas[0].xds + "," + replicas[1].xds
	c.admin, c.dataDir = replicas[0].admin, replicas[0].dataDir

	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	apply := func(edit string) {
		t.Helper()
		writeFile(t, policyFile, c.expand(chaosGatewayPolicy+chaosStaticServices+"\n---\n"+chaosRoutes(edit, true)))
		if out, err := runBinary("apply", "-f", policyFile, "--store", "consul", "--consul", consul.addr); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
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

// cpReplica is one of several control planes sharing a Consul.
type cpReplica struct {
	xds, admin, dataDir string
	consul, keyFile     string
	proc                *proc
}

// startReplicas starts n control planes sharing consul (store, catalog,
// one state key) and returns them with their common admin token.
func startReplicas(t *testing.T, consul *consulAgent, n int) ([]*cpReplica, string) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "state.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*cpReplica, n)
	for i := range replicas {
		replicas[i] = &cpReplica{xds: freeAddr(t), admin: freeAddr(t), dataDir: t.TempDir(),
			consul: consul.addr, keyFile: keyFile}
		replicas[i].start(t, fmt.Sprintf("controlplane-%d", i))
	}
	var token string
	eventually(t, 30*time.Second, "replicas up with one admin token", func() error {
		tokens := map[string]bool{}
		for _, r := range replicas {
			b, err := os.ReadFile(filepath.Join(r.dataDir, "admin-token"))
			if err != nil {
				return err
			}
			token = strings.TrimSpace(string(b))
			if _, err := r.status(token); err != nil {
				return err
			}
			tokens[token] = true
		}
		if len(tokens) != 1 {
			return fmt.Errorf("replicas have %d admin tokens", len(tokens))
		}
		return nil
	})
	return replicas, token
}

// start runs the replica (again, on the same addresses and data directory).
func (r *cpReplica) start(t *testing.T, name string) {
	t.Helper()
	r.proc = start(t, name, "controlplane", "--store", "consul", "--consul", r.consul,
		"--state-key-file", r.keyFile, "--data-dir", r.dataDir, "--xds-address", r.xds,
		"--admin-address", r.admin, "--log-level", "debug")
}

// status is the replica's /status.
func (r *cpReplica) status(token string) (*cpStatus, error) {
	var st cpStatus
	return &st, adminGet(r.admin, token, "/status", &st)
}

// waitSameModel waits until every replica compiled one model without error.
func waitSameModel(t *testing.T, replicas []*cpReplica, token string) {
	t.Helper()
	eventually(t, 30*time.Second, "replicas compile the same model", func() error {
		versions := map[string]bool{}
		for _, r := range replicas {
			st, err := r.status(token)
			if err != nil {
				return err
			}
			if st.LastError != "" {
				return fmt.Errorf("replica %s: %s", r.admin, st.LastError)
			}
			versions[st.Version] = true
		}
		if len(versions) != 1 || versions[""] {
			return fmt.Errorf("model versions %v", versions)
		}
		return nil
	})
}
