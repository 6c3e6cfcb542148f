package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxyEndpoint is one endpoint of the proxy admin's GET /clusters.
type proxyEndpoint struct {
	Address     string `json:"address"`
	ActiveCheck string `json:"active_check"`
	Ejected     bool   `json:"ejected"`
}

// proxyClusters reads a proxy admin's GET /clusters.
func proxyClusters(admin string) (map[string][]proxyEndpoint, error) {
	resp, err := client.Get("http://" + admin + "/clusters")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Name      string          `json:"name"`
			Endpoints []proxyEndpoint `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return nil, err
	}
	out := map[string][]proxyEndpoint{}
	for _, c := range dump.Clusters {
		out[c.Name] = c.Endpoints
	}
	return out, nil
}

// endpointState is the /clusters state of the endpoint at addr, in any
// cluster of the proxy.
func endpointState(admin, addr string) (proxyEndpoint, error) {
	clusters, err := proxyClusters(admin)
	if err != nil {
		return proxyEndpoint{}, err
	}
	for _, eps := range clusters {
		for _, e := range eps {
			if e.Address == addr {
				return e, nil
			}
		}
	}
	return proxyEndpoint{}, fmt.Errorf("no endpoint %s at %s/clusters", addr, admin)
}

// TestTrafficPolicyEjectsKilledInstance: three instances of echo behind the
// gateway, a TrafficPolicy with retries and outlier detection; one instance
// is killed under a steady client: (nearly) no request fails, the instance
// is ejected, and `meshgate proxies endpoints` shows it.
func TestTrafficPolicyEjectsKilledInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}, {address: "${echo-2}"}, {address: "${echo-3}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-resilient}
spec:
  targetRefs: [{kind: Service, name: echo}]
  retry:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error]
    backoff: {base: 1ms}
  outlierDetection:
    consecutiveGatewayErrors: 3
    interval: 1s
    baseEjectionTime: 1m
    maxEjectionPercent: 34
`))
	c.startControlPlane()
	procs := map[string]*proc{}
	for i := 1; i <= 3; i++ {
		name := "echo-" + strconv.Itoa(i)
		_, procs[name] = c.startApp(name, "echo", "i"+strconv.Itoa(i), "")
	}
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	admin := c.addr("gateway-admin-edge")
	c.expectEventually("echo via the gateway", 15*time.Second, gw, nil, servedBy("echo"))

	var sent, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := get(gw)
				sent.Add(1)
				if err != nil || r.status != http.StatusOK {
					failed.Add(1)
					mu.Lock()
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("%v %v", err, r))
					}
					mu.Unlock()
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	eventually(t, 30*time.Second, "200 requests before the kill", func() error {
		if n := sent.Load(); n < 200 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	killed := c.addr("echo-2")
	procs["echo-2"].kill()
	killedAt, sentAtKill := time.Now(), sent.Load()
	eventually(t, 30*time.Second, "the killed instance ejected", func() error {
		e, err := endpointState(admin, killed)
		if err == nil && !e.Ejected {
			err = fmt.Errorf("not ejected: %+v", e)
		}
		return err
	})
	ejectedAfter := time.Since(killedAt)
	eventually(t, 60*time.Second, "1000 requests after the kill", func() error {
		if n := sent.Load() - sentAtKill; n < 1000 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	total, bad := sent.Load(), failed.Load()
	t.Logf("%d requests, %d failed (%.3f%%); the killed instance ejected %v after the kill", total, bad, 100*float64(bad)/float64(total), ejectedAfter.Round(time.Millisecond))
	if bad*1000 > total {
		t.Errorf("%d of %d requests failed, want at most 0.1%%: %v", bad, total, failures)
	}

	// The gateway's admin address is the one it reported to the control
	// plane.
	out, err := c.cli("proxies", "endpoints", "edge")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, killed) && !strings.Contains(line, "until ") {
			t.Errorf("meshgate proxies endpoints does not show %s ejected:\n%s", killed, out)
		}
	}
}

// TestTrafficPolicyFaultInjection: a TrafficPolicy aborting 20% of the
// requests that carry X-Chaos: on aborts 20% ± 5% of 1000 such requests
// at the gateway, and none without the header.
func TestTrafficPolicyFaultInjection(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), staticServices("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-chaos}
spec:
  targetRefs: [{kind: Service, name: echo}]
  faultInjection:
    abort: {httpStatus: 503, percent: 20}
    onlyWithHeader: {name: X-Chaos, value: "on"}
`))
	c.startControlPlane()
	c.app("echo", "echo", "v1", "")
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	c.expectEventually("echo via the gateway", 15*time.Second, gw, nil, servedBy("echo"))
	eventually(t, 15*time.Second, "a fault for X-Chaos: on", func() error {
		for range 100 {
			if r, err := get(gw, "X-Chaos: on"); err == nil && r.status == http.StatusServiceUnavailable {
				return nil
			}
		}
		return fmt.Errorf("no 503 in 100 requests")
	})
	count := func(headers ...string) (aborted int) {
		t.Helper()
		for range 1000 {
			r, err := get(gw, headers...)
			switch {
			case err != nil:
				t.Fatal(err)
			case r.status == http.StatusServiceUnavailable && strings.Contains(r.body, "fault filter abort"):
				aborted++
			case r.status != http.StatusOK:
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		}
		return aborted
	}
	withHeader, without := count("X-Chaos: on"), count()
	t.Logf("aborted %d of 1000 with X-Chaos: on, %d of 1000 without", withHeader, without)
	if withHeader < 150 || withHeader > 250 {
		t.Errorf("aborted %d of 1000 requests with X-Chaos: on, want 20%% ± 5%%", withHeader)
	}
	if without != 0 {
		t.Errorf("aborted %d of 1000 requests without X-Chaos", without)
	}
}
