package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTrafficPolicyAttemptsHeader: a TrafficPolicy retry with
// attemptsHeader on a service one of whose three endpoints is dead: every
// request succeeds, each try tells the instance its number
// (x-envoy-attempt-count), and the client learns how many tries its
// response took: 2 when the dead endpoint was tried first, else 1.
func TestTrafficPolicyAttemptsHeader(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-dead}"}, {address: "${echo-1}"}, {address: "${echo-2}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-retries}
spec:
  targetRefs: [{kind: Service, name: echo}]
  retry: {attempts: 2, retryOn: [connect-failure], backoff: {base: 1ms}, attemptsHeader: true}
`))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.app("echo-2", "echo", "v2", "")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("echo via gateway", 10*time.Second, gw+"/", nil, servedBy("echo"))

	counts := map[string]int{}
	for range 20 {
		r, err := get(gw + "/")
		if err != nil {
			t.Fatal(err)
		}
		if err := servedBy("echo")(r); err != nil {
			t.Fatalf("a request failed despite the retry: %v", err)
		}
		attempts := r.header.Get("X-Envoy-Attempt-Count")
		if upstream := r.reply.Headers["x-envoy-attempt-count"]; upstream != attempts {
			t.Fatalf("the instance saw try %q, the client was told %q tries", upstream, attempts)
		}
		counts[attempts]++
	}
	if counts["1"] == 0 || counts["2"] == 0 || counts["1"]+counts["2"] != 20 {
		t.Errorf("tries per response: %v, want some 1 and some 2 (round robin over a dead and two live endpoints)", counts)
	}
	t.Logf("tries per response: %s×1, %s×2", strconv.Itoa(counts["1"]), strconv.Itoa(counts["2"]))
}

// postBody posts n bytes to url (chunked: without a Content-Length) with
// the host given, and returns the status.
func postBody(t *testing.T, url, host string, n int, chunked bool) int {
	t.Helper()
	var body io.Reader = strings.NewReader(strings.Repeat("x", n))
	if chunked {
		body = io.MultiReader(body) // hides the length: sent chunked
	}
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %d bytes to %s: %v", n, url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestTrafficPolicyBodyLimits: a TrafficPolicy bodyLimits on a Service
// gives a request body over the limit 413, and one within it the
// service's answer, the same at the gateway and at a sidecar, whether the
// body has a Content-Length or is chunked.
func TestTrafficPolicyBodyLimits(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-limits}
spec:
  targetRefs: [{kind: Service, name: echo}]
  bodyLimits: {maxRequestBytes: 1024}
`))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.startInstance(c.sidecar, "client", "client", "v1")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	out := "http://" + c.addr("client-out")
	c.expectEventually("echo via gateway", 10*time.Second, gw+"/", nil, servedBy("echo"))
	c.expectEventually("echo via the client's sidecar", 10*time.Second, out+"/", []string{"Host: echo"}, servedBy("echo"))

	for _, entry := range []struct{ name, base, host string }{{"gateway", gw, "edge"}, {"sidecar", out, "echo"}} {
		for _, tc := range []struct {
			n       int
			chunked bool
			want    int
		}{
			{1024, false, http.StatusOK},
			{1024, true, http.StatusOK},
			{1025, false, http.StatusRequestEntityTooLarge},
			{256 << 10, true, http.StatusRequestEntityTooLarge},
		} {
			if got := postBody(t, entry.base+"/upload", entry.host, tc.n, tc.chunked); got != tc.want {
				t.Errorf("%s: %d bytes (chunked %v): status %d, want %d", entry.name, tc.n, tc.chunked, got, tc.want)
			}
		}
	}
}

// TestConfigDumpCLI: meshgate config-dump shows, for one connected
// gateway, the effective policy of its cluster and route as the
// TrafficPolicy set them (load balancer, timeouts, circuit breaker,
// outlier detection, retry, attempt counts, body limit), in a table and as
// JSON; an unknown node is an error.
func TestConfigDumpCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-policy}
spec:
  targetRefs: [{kind: Service, name: echo}]
  loadBalancer: {type: LeastRequest}
  timeouts: {connect: 2s, request: 9s}
  retry: {attempts: 2, retryOn: [5xx], attemptsHeader: true}
  circuitBreaker: {maxConnections: 64}
  outlierDetection: {consecutive5xx: 5, interval: 1s}
  bodyLimits: {maxRequestBytes: 4096, maxResponseBytes: 65536}
`))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("echo via gateway", 10*time.Second, gw+"/", nil, servedBy("echo"))
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	node := ""
	for _, p := range st.Proxies {
		if p.Role == "gateway" {
			node = p.ID
		}
	}
	if node == "" {
		t.Fatalf("no gateway among the connected proxies: %+v", st.Proxies)
	}

	out, err := c.cli("config-dump", node)
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"default/echo:80 240.240.", // the service's VIP
		"LEAST_REQUEST choices=2 2s",
		"maxConnections=64",
		"consecutive5xx=5 interval=1s",
		"default/echo:80 9s on=5xx retries=2",
		"4096 bytes, response 65536 bytes",
		"counted",
		"envoy.filters.http.buffer",
		"meshgate.filters.http.response_limit",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("config-dump lacks %q:\n%s", want, out)
		}
	}
	out, err = c.cli("config-dump", node, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Node     string `json:"node"`
		Clusters []struct {
			Name, LB string
		} `json:"clusters"`
	}
	if err := json.Unmarshal([]byte(out), &dump); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if dump.Node != node || len(dump.Clusters) == 0 || !strings.HasPrefix(dump.Clusters[0].LB, "LEAST_REQUEST") {
		t.Errorf("-o json: %+v", dump)
	}
	if _, err := c.cli("config-dump", "no-such-node"); err == nil || !strings.Contains(err.Error(), "no connected proxy") {
		t.Errorf("an unknown node: %v, want the control plane's 404", err)
	}
}

// localityPolicy is the service echo with one endpoint in zone-a and two
// in zone-b (the zone-a one left out when withLocal is false), behind a
// gateway route, and a TrafficPolicy preferring local endpoints.
func localityPolicy(withLocal bool) string {
	local := `{address: "${echo-a}", labels: {topology.kubernetes.io/zone: zone-a}}, `
	if !withLocal {
		local = ""
	}
	return yamlDocs(edgeGateway, routeTo("echo"), `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [`+local+`{address: "${echo-b1}", labels: {zone: zone-b}}, {address: "${echo-b2}", labels: {zone: zone-b}}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-local}
spec:
  targetRefs: [{kind: Service, name: echo}]
  loadBalancer: {locality: {preferLocal: true}}
`)
}

// TestTrafficPolicyPreferLocal: a gateway in zone-a (--zone) sends every
// request to echo's zone-a endpoint while it is there, fails over to the
// zone-b ones when it is gone, and comes back when it returns.
func TestTrafficPolicyPreferLocal(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", localityPolicy(true))
	c.startControlPlane()
	c.app("echo-a", "echo", "a", "")
	c.app("echo-b1", "echo", "b", "")
	c.app("echo-b2", "echo", "b", "")
	c.gateway("edge", "--zone", "zone-a")
	gw := "http://" + c.addr("gw")

	// versions counts the zones of n answers (an error until the
	// gateway serves the route).
	versions := func(n int) (map[string]int, error) {
		out := map[string]int{}
		for range n {
			r, err := get(gw + "/")
			if err != nil {
				return nil, err
			}
			if err := servedBy("echo")(r); err != nil {
				return nil, err
			}
			out[r.reply.Version]++
		}
		return out, nil
	}
	allFrom := func(zone string) func() error {
		return func() error {
			got, err := versions(10)
			if err != nil {
				return err
			}
			if got[zone] != 10 {
				return fmt.Errorf("answers per zone %v, want all from zone %s", got, zone)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "every answer from the local zone", allFrom("a"))
	if got, err := versions(40); err != nil || got["a"] != 40 {
		t.Fatalf("answers per zone %v (%v), want all 40 from zone a", got, err)
	}
	c.policy("traffic.yaml", localityPolicy(false))
	eventually(t, 10*time.Second, "failover to zone b without the local endpoint", allFrom("b"))
	c.policy("traffic.yaml", localityPolicy(true))
	eventually(t, 10*time.Second, "back to the local zone", allFrom("a"))
}

// TestConsulPreferLocalFailsOver: instances of orders registered in Consul
// by sidecars started with --zone (one in zone-a, two in zone-b), a
// TrafficPolicy preferring local endpoints, a gateway in zone-a. Every
// request goes to the zone-a instance; when its app dies, Consul takes it
// out and the gateway's requests fail over to zone-b; when it comes back,
// so do they.
func TestConsulPreferLocalFailsOver(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)
	health := []string{"--app-health-interval", "200ms", "--app-health-timeout", "500ms"}
	local := c.startInstance(consulSidecars(c, consul, append(health, "--zone", "zone-a")...), "orders-a", "orders", "a")
	inB := consulSidecars(c, consul, append(health, "--zone", "zone-b")...)
	c.startInstance(inB, "orders-b1", "orders", "b")
	c.startInstance(inB, "orders-b2", "orders", "b")
	c.policy("routes.yaml", yamlDocs(routeTo("orders"), `
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders-local}
spec:
  targetRefs: [{kind: Service, name: orders}]
  loadBalancer: {locality: {preferLocal: true}}
`))
	c.gateway("edge", "--zone", "zone-a")
	gw := "http://" + c.addr("gw") + "/"
	allFrom := func(version string) func() error {
		return func() error {
			seen := map[string]int{}
			for range 10 {
				r, err := get(gw)
				if err != nil {
					return err
				}
				seen[r.reply.Version]++
			}
			if seen[version] != 10 {
				return fmt.Errorf("answers by version %v, want all 10 from %s", seen, version)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "every answer from the zone-a instance", allFrom("a"))
	local.appProc.kill()
	eventually(t, 20*time.Second, "failover to zone-b once Consul takes the local instance out", allFrom("b"))
	local.restartApp()
	eventually(t, 20*time.Second, "back to the zone-a instance", allFrom("a"))
}
