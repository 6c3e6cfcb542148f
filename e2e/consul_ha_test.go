package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

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
	// Both replicas agree on one admin token (kept in KV, copied to each data dir).
	replicas, token := startReplicas(t, c, consul, 2)

	// Policy goes into Consul KV with `meshgate apply`.
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	c.applyToConsul(consul, yamlDocs(blueGreenServices(), routeTo("blue")))
	waitSameModel(t, replicas, token)

	// A token minted by replica 0 (c's CLI) enrols a gateway that may use
	// either, replica 1 first.
	c.gateway("edge")
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
			s, err := r.status(token)
			if err != nil {
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
	c.applyToConsul(consul, yamlDocs(blueGreenServices(), routeTo("green")))
	eventually(t, 10*time.Second, "applied change takes effect", func() error { return load.allOn("green") })

	// Kill the replica the gateway is connected to.
	connected := -1
	eventually(t, 10*time.Second, "gateway connected to a replica", func() error {
		for i, r := range replicas {
			s, err := r.status(token)
			if err != nil {
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
		s, err := other.status(token)
		if err != nil {
			return err
		}
		if len(s.Proxies) != 1 {
			return fmt.Errorf("%d proxies on the surviving replica", len(s.Proxies))
		}
		return nil
	})
	c.applyToConsul(consul, yamlDocs(blueGreenServices(), routeTo("blue")))
	eventually(t, 10*time.Second, "the surviving replica serves new policy", func() error { return load.allOn("blue") })
	load.stop()
	load.check(t)
}
