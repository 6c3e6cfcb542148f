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

	"github.com/hashicorp/consul/api"
)

// haReplica is one control plane of a highly available pair.
type haReplica struct {
	xds, admin, dataDir string
	proc                *proc
}

// TestConsulHighAvailability: two control planes share one Consul (policy in
// KV, CA and tokens encrypted in KV). Policy applied with `meshgate apply`
// reaches proxies; both replicas compile the same model; a token minted on one
// works against the other; hand-written garbage in KV is rejected with its key
// named while traffic flows; killing the replica a gateway uses, under a
// looping client, fails no request.
func TestConsulHighAvailability(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	keyFile := filepath.Join(t.TempDir(), "state.key")
	var key [32]byte
	_, _ = rand.Read(key[:])
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*haReplica, 2)
	for i := range replicas {
		r := &haReplica{xds: freeAddr(t), admin: freeAddr(t), dataDir: t.TempDir()}
		r.proc = start(t, fmt.Sprintf("controlplane-%d", i), "controlplane", "--store", "consul", "--consul", consul.addr,
			"--state-key-file", keyFile, "--data-dir", r.dataDir, "--xds-address", r.xds, "--admin-address", r.admin, "--log-level", "debug")
		replicas[i] = r
	}
	// Both replicas agree on one admin token (kept in KV, copied to each data dir).
	var token string
	eventually(t, 30*time.Second, "replicas up with one admin token", func() error {
		var toks []string
		for _, r := range replicas {
			b, err := os.ReadFile(filepath.Join(r.dataDir, "admin-token"))
			if err != nil {
				return err
			}
			var s cpStatus
			if err := adminGet(r.admin, strings.TrimSpace(string(b)), "/status", &s); err != nil {
				return err
			}
			toks = append(toks, strings.TrimSpace(string(b)))
		}
		if toks[0] != toks[1] {
			return fmt.Errorf("replicas have different admin tokens")
		}
		token = toks[0]
		return nil
	})
	cli := func(r *haReplica, args ...string) (string, error) {
		c.admin, c.dataDir = r.admin, r.dataDir
		return c.cli(args...)
	}

	// Policy goes into Consul KV with `meshgate apply`.
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, policyFile, c.expand(reloadServices+"\n---\n"+routeTo("blue")))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	apply := func(content string) {
		t.Helper()
		writeFile(t, policyFile, c.expand(content))
		out, err := runBinary("apply", "-f", policyFile, "--store", "consul", "--consul", consul.addr)
		if err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
	}
	apply(reloadServices + "\n---\n" + routeTo("blue"))

	eventually(t, 15*time.Second, "both replicas compile the same model", func() error {
		var versions []string
		for _, r := range replicas {
			var s cpStatus
			if err := adminGet(r.admin, token, "/status", &s); err != nil {
				return err
			}
			if s.LastError != "" {
				return fmt.Errorf("replica %s: %s", r.admin, s.LastError)
			}
			versions = append(versions, s.Version)
		}
		if versions[0] != versions[1] || versions[0] == "" {
			return fmt.Errorf("model versions %v", versions)
		}
		return nil
	})

	// A token minted by replica 0 enrols a gateway that may use either.
	tok, err := cli(replicas[0], "token", "create", "--service", "edge", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	gwAdmin := c.addr("gateway-admin-edge")
	start(t, "gateway edge", "gateway", "--name", "edge", "--xds", replicas[1].xds+","+replicas[0].xds,
		"--admin", gwAdmin, "--token", strings.TrimSpace(tok), "--log-level", "debug")
	c.waitReady(gwAdmin)
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("routed to blue", 15*time.Second, url, nil, servedBy("blue"))

	load := startLoad(t, url, 4)

	// Garbage written by hand into KV is rejected, named, and changes nothing.
	garbageKey := "meshgate/policy/HTTPRoute/default/garbage"
	if _, err := consul.client.KV().Put(&api.KVPair{Key: garbageKey, Value: []byte("kind: [not yaml")}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "garbage in KV reported with its key", func() error {
		for _, r := range replicas {
			var s cpStatus
			if err := adminGet(r.admin, token, "/status", &s); err != nil {
				return err
			}
			if !strings.Contains(s.LastError, "consul:"+garbageKey) {
				return fmt.Errorf("replica %s lastError %q", r.admin, s.LastError)
			}
		}
		return nil
	})
	if _, err := consul.client.KV().Delete(garbageKey, nil); err != nil {
		t.Fatal(err)
	}

	// A change applied through the CLI reaches the gateway.
	apply(reloadServices + "\n---\n" + routeTo("green"))
	eventually(t, 10*time.Second, "applied change takes effect", func() error { return load.allOn("green") })

	// Kill the replica the gateway is connected to.
	connected := -1
	eventually(t, 10*time.Second, "gateway connected to a replica", func() error {
		for i, r := range replicas {
			var s cpStatus
			if err := adminGet(r.admin, token, "/status", &s); err != nil {
				return err
			}
			if len(s.Proxies) == 1 {
				connected = i
				return nil
			}
		}
		return fmt.Errorf("gateway not listed by any replica")
	})
	replicas[connected].proc.kill()
	other := replicas[1-connected]
	eventually(t, 20*time.Second, "gateway fails over to the other replica", func() error {
		var s cpStatus
		if err := adminGet(other.admin, token, "/status", &s); err != nil {
			return err
		}
		if len(s.Proxies) != 1 {
			return fmt.Errorf("%d proxies on the surviving replica", len(s.Proxies))
		}
		return nil
	})
	apply(reloadServices + "\n---\n" + routeTo("blue"))
	eventually(t, 10*time.Second, "the surviving replica serves new policy", func() error { return load.allOn("blue") })
	load.stop()
	load.check(t)
}

// runBinary runs meshgate with args and returns its combined output.
func runBinary(args ...string) (string, error) {
	out, err := execCommand(binary, args...).CombinedOutput()
	return string(out), err
}
