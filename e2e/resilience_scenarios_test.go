package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The TrafficPolicy scenarios through the real meshgate binary (control
// plane, gateway, sidecar as separate processes). Their backends are real
// HTTP servers on loopback ports that the test runs itself, so that each
// can misbehave on cue (answer 500, hang, be slow, hold requests) and
// count exactly the requests (the attempts) the proxies sent it.

// testBackend is a real HTTP server on a free loopback port, ${name} in
// the cluster's policy, answering 200 with its name (body and X-Backend
// header) unless handle answers. It counts the requests it received, its
// active health checks (GET /healthz) apart.
type testBackend struct {
	name     string
	addr     string
	requests atomic.Int64
	checks   atomic.Int64
	closed   chan struct{} // closed when the test ends: hanging handlers return
}

// startTestBackend starts the backend name; handle (optional) answers a
// request itself by returning true.
func startTestBackend(c *cluster, name string, handle func(b *testBackend, w http.ResponseWriter, r *http.Request) bool) *testBackend {
	c.t.Helper()
	b := &testBackend{name: name, addr: c.addr(name), closed: make(chan struct{})}
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		c.t.Fatalf("backend %s: %v", name, err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		if r.URL.Path == "/healthz" {
			b.checks.Add(1)
		} else {
			b.requests.Add(1)
		}
		if handle != nil && handle(b, w, r) {
			return
		}
		w.Header().Set("X-Backend", name)
		_, _ = io.WriteString(w, name)
	})}
	go func() { _ = srv.Serve(ln) }()
	c.t.Cleanup(func() {
		close(b.closed)
		_ = srv.Close()
	})
	return b
}

// hang blocks a handler until the proxy gives up on the request or the
// test ends.
func (b *testBackend) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-b.closed:
	}
}

// serviceOf is a Service on port 80 with the endpoints at ${names}.
func serviceOf(svc string, names ...string) string {
	eps := make([]string, len(names))
	for i, n := range names {
		eps[i] = `{address: "${` + n + `}"}`
	}
	return `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: ` + svc + `}
spec:
  ports: [{port: 80}]
  endpoints: [` + strings.Join(eps, ", ") + `]
`
}

// trafficPolicy is the TrafficPolicy name on the Service svc with the
// sections given as YAML (indented for spec).
func trafficPolicy(name, svc, sections string) string {
	return `
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ` + name + `}
spec:
  targetRefs: [{kind: Service, name: ` + svc + `}]
` + sections
}

// entryPoint is where the test's traffic enters the mesh: the gateway
// edge, or the sidecar of a client service, whose outbound listener
// routes by Host.
type entryPoint struct {
	name    string
	base    string   // http://listener
	headers []string // e.g. Host: svc
	admin   string   // the proxy's admin address
}

func (e entryPoint) get(path string, headers ...string) (*response, error) {
	return get(e.base+path, append(append([]string(nil), e.headers...), headers...)...)
}

// startBothEntries starts the gateway edge (routing every request to svc,
// as routeTo does) and the client service's instance behind a sidecar,
// and returns both entry points once svc answers through each.
func startBothEntries(c *cluster, svc string) []entryPoint {
	c.t.Helper()
	c.startInstance(c.sidecar, "client", "client", "v1")
	c.gateway("edge")
	entries := []entryPoint{
		{name: "gateway", base: "http://" + c.addr("gw"), admin: c.addr("gateway-admin-edge")},
		{name: "sidecar", base: "http://" + c.addr("client-out"), headers: []string{"Host: " + svc},
			admin: c.addr("sidecar-admin-" + c.addr("client-in"))},
	}
	for _, e := range entries {
		eventually(c.t, 15*time.Second, svc+" via the "+e.name, func() error {
			r, err := e.get("/")
			if err != nil {
				return err
			}
			if r.status != http.StatusOK || r.header.Get("X-Backend") == "" {
				return fmt.Errorf("%d %.200s", r.status, r.body)
			}
			return nil
		})
	}
	return entries
}

// clusterBreaker is the circuit breaker state of the cluster whose name
// contains svc in a proxy's /clusters.
func clusterBreaker(admin, svc string) (map[string]uint64, error) {
	resp, err := client.Get("http://" + admin + "/clusters")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Name            string `json:"name"`
			CircuitBreakers *struct {
				Overflows map[string]uint64 `json:"overflows"`
			} `json:"circuit_breakers"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return nil, err
	}
	for _, c := range dump.Clusters {
		if strings.Contains(c.Name, "/"+svc+":") && c.CircuitBreakers != nil {
			return c.CircuitBreakers.Overflows, nil
		}
	}
	return nil, fmt.Errorf("no circuit breaker on a cluster of %s at %s", svc, admin)
}

// TestTrafficPolicyEjectsHalfFailingInstance: of three instances, one
// answers 500 to every other request; outlier detection by failure
// percentage ejects it, the two others stay, and it gets no more traffic.
func TestTrafficPolicyEjectsHalfFailingInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var n atomic.Int64
	flaky := startTestBackend(c, "flaky", func(_ *testBackend, w http.ResponseWriter, _ *http.Request) bool {
		if n.Add(1)%2 == 0 {
			http.Error(w, "failing", http.StatusInternalServerError)
			return true
		}
		return false
	})
	good := []*testBackend{startTestBackend(c, "good-1", nil), startTestBackend(c, "good-2", nil)}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), serviceOf("echo", "good-1", "good-2", "flaky"),
		trafficPolicy("echo-outliers", "echo", `
  outlierDetection:
    failurePercentage: {threshold: 40, minHosts: 3, requestVolume: 5}
    interval: 1s
    baseEjectionTime: 1m
    maxEjectionPercent: 34
`)))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	admin := c.addr("gateway-admin-edge")
	c.expectEventually("echo via the gateway", 15*time.Second, gw, nil, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("%d %.200s", r.status, r.body)
		}
		return nil
	})

	start := time.Now()
	var sent, failed int
	eventually(t, 30*time.Second, "the half-failing instance ejected", func() error {
		for range 30 {
			r, err := get(gw)
			if err != nil {
				return err
			}
			sent++
			if r.status != http.StatusOK {
				failed++
			}
		}
		e, err := endpointState(admin, flaky.addr)
		if err == nil && !e.Ejected {
			err = fmt.Errorf("not ejected after %d requests: %+v", sent, e)
		}
		return err
	})
	t.Logf("the instance failing half its requests was ejected %v after traffic began, after %d requests of which %d failed (%.1f%%)",
		time.Since(start).Round(time.Millisecond), sent, failed, 100*float64(failed)/float64(sent))
	for _, g := range good {
		if e, err := endpointState(admin, g.addr); err != nil || e.Ejected {
			t.Errorf("healthy instance %s: %+v %v", g.name, e, err)
		}
	}
	before := flaky.requests.Load()
	for i := range 60 {
		r, err := get(gw)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d after the ejection: %v %v", i, err, r)
		}
	}
	if got := flaky.requests.Load() - before; got != 0 {
		t.Errorf("the ejected instance received %d of 60 requests after its ejection", got)
	}
}

// TestTrafficPolicyHealthCheckMarksHangingInstance: of three instances
// passing their active HTTP check, one starts hanging (its checks and its
// requests never answer): its check fails by timeout, the two others keep
// passing, and it gets no traffic.
func TestTrafficPolicyHealthCheckMarksHangingInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var hanging atomic.Bool
	stuck := startTestBackend(c, "stuck", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
		if hanging.Load() {
			b.hang(r)
			return true
		}
		return false
	})
	all := []*testBackend{startTestBackend(c, "ok-1", nil), startTestBackend(c, "ok-2", nil), stuck}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), serviceOf("echo", "ok-1", "ok-2", "stuck"),
		trafficPolicy("echo-checked", "echo", `
  healthCheck:
    http: {path: /healthz}
    interval: 500ms
    timeout: 1s
    unhealthyThreshold: 2
`)))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	admin := c.addr("gateway-admin-edge")
	checks := func() (map[string]string, error) {
		out := map[string]string{}
		for _, b := range all {
			e, err := endpointState(admin, b.addr)
			if err != nil {
				return nil, err
			}
			out[b.name] = e.ActiveCheck
		}
		return out, nil
	}
	eventually(t, 20*time.Second, "every instance passing its check", func() error {
		states, err := checks()
		if err == nil && (states["ok-1"] != "passing" || states["ok-2"] != "passing" || states["stuck"] != "passing") {
			err = fmt.Errorf("checks %v", states)
		}
		return err
	})
	hanging.Store(true)
	since, checksBefore := time.Now(), stuck.checks.Load()
	eventually(t, 20*time.Second, "the hanging instance failing its check, the others passing", func() error {
		states, err := checks()
		if err == nil && (states["ok-1"] != "passing" || states["ok-2"] != "passing" || states["stuck"] != "failing") {
			err = fmt.Errorf("checks %v", states)
		}
		return err
	})
	t.Logf("the hanging instance failed its check %v after it began hanging (%d checks it never answered)",
		time.Since(since).Round(time.Millisecond), stuck.checks.Load()-checksBefore)
	before := stuck.requests.Load()
	for i := range 60 {
		r, err := get(gw)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d with the hanging instance failing its check: %v %v", i, err, r)
		}
	}
	if got := stuck.requests.Load() - before; got != 0 {
		t.Errorf("the hanging instance received %d of 60 requests after failing its check", got)
	}
}

// TestTrafficPolicyCircuitBreakerBothWays: a TrafficPolicy with
// circuitBreaker.maxRequests 4 on a service, whose one instance holds the
// requests to /hold: with four held, a burst of 20 gets immediate 503s
// with x-meshgate-overloaded: max_requests (the burst completes while the
// four are still held: nothing queues); released, the proxy serves again.
// The same, whether traffic enters at the gateway or at a sidecar.
func TestTrafficPolicyCircuitBreakerBothWays(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var mu sync.Mutex
	gate := make(chan struct{})
	var held atomic.Int64
	startTestBackend(c, "cb", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/hold" {
			return false
		}
		mu.Lock()
		g := gate
		mu.Unlock()
		held.Add(1)
		defer held.Add(-1)
		select {
		case <-g:
		case <-b.closed:
		}
		return false
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("limited"), meshServices("client"), serviceOf("limited", "cb"),
		trafficPolicy("limited-breaker", "limited", `
  circuitBreaker: {maxRequests: 4}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "limited") {
		var holders sync.WaitGroup
		holdCodes := make(chan string, 4)
		for range 4 {
			holders.Go(func() {
				r, err := e.get("/hold")
				if err != nil {
					holdCodes <- err.Error()
				} else {
					holdCodes <- strconv.Itoa(r.status)
				}
			})
		}
		eventually(t, 15*time.Second, "four requests held via the "+e.name, func() error {
			if n := held.Load(); n != 4 {
				return fmt.Errorf("%d held", n)
			}
			return nil
		})
		for i := range 20 {
			r, err := e.get("/burst")
			if err != nil {
				t.Fatalf("%s: burst request %d: %v", e.name, i, err)
			}
			if r.status != http.StatusServiceUnavailable || r.header.Get("X-Meshgate-Overloaded") != "max_requests" {
				t.Fatalf("%s: burst request %d: %d x-meshgate-overloaded=%q %.100s, want 503 max_requests",
					e.name, i, r.status, r.header.Get("X-Meshgate-Overloaded"), r.body)
			}
		}
		if n := held.Load(); n != 4 {
			t.Errorf("%s: %d requests held after the burst, want the 4 still held: the burst must not wait for them", e.name, n)
		}
		mu.Lock()
		close(gate)
		gate = make(chan struct{})
		mu.Unlock()
		holders.Wait()
		close(holdCodes)
		for code := range holdCodes {
			if code != "200" {
				t.Errorf("%s: held request: %s", e.name, code)
			}
		}
		for i := range 10 {
			if r, err := e.get("/after"); err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: request %d after the burst: %v %v", e.name, i, err, r)
			}
		}
		overflows, err := clusterBreaker(e.admin, "limited")
		if err != nil {
			t.Fatal(err)
		}
		if overflows["max_requests"] != 20 {
			t.Errorf("%s: /clusters counts %v overflows, want 20 max_requests", e.name, overflows)
		}
		t.Logf("%s: 20 of 20 burst requests refused at once (503 max_requests) with 4 held; served again once released", e.name)
	}
}

// TestTrafficPolicyPerTryTimeoutBothWays: of two instances, one never
// answers; with a per-try timeout and a retry, every request succeeds via
// the other instance, whether it enters at the gateway or at a sidecar.
func TestTrafficPolicyPerTryTimeoutBothWays(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	slow := startTestBackend(c, "slow", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/" {
			return false // the readiness probe of startBothEntries
		}
		b.hang(r)
		return true
	})
	fast := startTestBackend(c, "fast", nil)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), serviceOf("echo", "fast", "slow"),
		trafficPolicy("echo-per-try", "echo", `
  retry:
    attempts: 2
    perTryTimeout: 300ms
    retryOn: [reset, gateway-error]
    backoff: {base: 1ms}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "echo") {
		slowBefore, fastBefore := slow.requests.Load(), fast.requests.Load()
		const requests = 6
		for i := range requests {
			r, err := e.get("/work")
			if err != nil {
				t.Fatalf("%s: request %d: %v", e.name, i, err)
			}
			if r.status != http.StatusOK || r.header.Get("X-Backend") != "fast" {
				t.Fatalf("%s: request %d: %d from %q %.100s, want 200 from fast", e.name, i, r.status, r.header.Get("X-Backend"), r.body)
			}
		}
		timedOut, served := slow.requests.Load()-slowBefore, fast.requests.Load()-fastBefore
		t.Logf("%s: %d of %d requests succeeded; %d tries timed out on the hanging instance and were retried on the other", e.name, requests, requests, timedOut)
		if timedOut == 0 {
			t.Errorf("%s: no try went to the hanging instance: the scenario did not happen", e.name)
		}
		if served != requests {
			t.Errorf("%s: the answering instance served %d tries for %d requests", e.name, served, requests)
		}
	}
}

// TestTrafficPolicyRetryBudgetCapsRetries: every instance answers 503;
// the policy retries 3 times within a retry budget of 20% of the requests
// in flight (at least 1). One request at a time gets its 3 retries (4
// attempts each, counted by the backends); 20 clients at once get far
// fewer, as the budget refuses retries: retries cannot multiply the load
// of a failing service by 4.
func TestTrafficPolicyRetryBudgetCapsRetries(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var backends []*testBackend
	for i := 1; i <= 3; i++ {
		backends = append(backends, startTestBackend(c, "down-"+strconv.Itoa(i), func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path == "/ok" {
				return false
			}
			time.Sleep(20 * time.Millisecond) // a slow failure: the requests overlap
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}))
	}
	attempts := func() (n int64) {
		for _, b := range backends {
			n += b.requests.Load()
		}
		return n
	}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), serviceOf("echo", "down-1", "down-2", "down-3"),
		trafficPolicy("echo-budget", "echo", `
  retry:
    attempts: 3
    retryOn: [gateway-error]
    backoff: {base: 1ms}
    budget: {percent: 20, minConcurrency: 1}
`)))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("echo via the gateway", 15*time.Second, gw+"/ok", nil, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("%d %.200s", r.status, r.body)
		}
		return nil
	})

	// One at a time: every request is retried 3 times.
	before := attempts()
	const sequential = 10
	for i := range sequential {
		r, err := get(gw + "/fail")
		if err != nil || r.status != http.StatusServiceUnavailable {
			t.Fatalf("request %d: %v %v, want the backends' 503", i, err, r)
		}
	}
	if got := attempts() - before; got != 4*sequential {
		t.Fatalf("%d requests one at a time: the backends saw %d attempts, want %d (3 retries each)", sequential, got, 4*sequential)
	}

	// 20 clients at once: the budget allows 20% of the requests in flight.
	before = attempts()
	const clients, each = 20, 10
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range clients {
		wg.Go(func() {
			for range each {
				if r, err := get(gw + "/fail"); err != nil || r.status != http.StatusServiceUnavailable {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests did not get the backends' 503", bad.Load())
	}
	requests := int64(clients * each)
	got := attempts() - before
	retries := got - requests
	overflows, err := clusterBreaker(c.addr("gateway-admin-edge"), "echo")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d concurrent requests to failing instances: %d attempts (%.2f per request; 4 without a budget), %d retries refused by the budget",
		requests, got, float64(got)/float64(requests), overflows["max_retries"])
	if retries > requests {
		t.Errorf("%d requests made %d retries: the budget should keep them well under one per request", requests, retries)
	}
	if overflows["max_retries"] == 0 {
		t.Errorf("/clusters counts no retry refused by the budget: %v", overflows)
	}
}

// TestTrafficPolicyRingHashMovesOnlyLeavingKeys: with a ring hash on
// X-User over four instances, one user reaches the same instance over
// 1000 requests; when one instance leaves the Service (its policy file
// rewritten while running), exactly the users it served move, about 1/4,
// and every other user keeps their instance. (Four to three is where a
// ring scaled to minimum_ring_size would grow and move others' users too.)
func TestTrafficPolicyRingHashMovesOnlyLeavingKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	names := []string{"ring-1", "ring-2", "ring-3", "ring-4"}
	for _, n := range names {
		startTestBackend(c, n, nil)
	}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), trafficPolicy("echo-sticky", "echo", `
  loadBalancer:
    type: RingHash
    hash: {header: X-User}
`)))
	c.policy("services.yaml", serviceOf("echo", names...))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	admin := c.addr("gateway-admin-edge")
	instanceOf := func(user string) (string, error) {
		r, err := get(gw, "X-User: "+user)
		if err != nil {
			return "", err
		}
		if r.status != http.StatusOK {
			return "", fmt.Errorf("%s: %d %.200s", user, r.status, r.body)
		}
		return r.header.Get("X-Backend"), nil
	}
	eventually(t, 15*time.Second, "echo via the gateway", func() error {
		_, err := instanceOf("u0")
		return err
	})
	first, err := instanceOf("steady")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if got, err := instanceOf("steady"); err != nil || got != first {
			t.Fatalf("request %d of one user: %q %v, want %s every time", i, got, err, first)
		}
	}

	const users = 400
	mapping := func() map[string]string {
		t.Helper()
		m := map[string]string{}
		for i := range users {
			u := "user-" + strconv.Itoa(i)
			got, err := instanceOf(u)
			if err != nil {
				t.Fatal(err)
			}
			m[u] = got
		}
		return m
	}
	before := mapping()
	spread := map[string]int{}
	for _, inst := range before {
		spread[inst]++
	}
	leaving := "ring-4"
	c.policy("services.yaml", serviceOf("echo", names[:3]...))
	eventually(t, 15*time.Second, leaving+" gone from the gateway's cluster", func() error {
		clusters, err := proxyClusters(admin)
		if err != nil {
			return err
		}
		for _, eps := range clusters {
			for _, e := range eps {
				if e.Address == c.addr(leaving) {
					return errors.New("still there")
				}
			}
		}
		return nil
	})
	after := mapping()
	var moved, stayedMoved int
	for u, was := range before {
		switch now := after[u]; {
		case now == leaving:
			t.Fatalf("%s still reaches %s after it left", u, leaving)
		case was == leaving:
			moved++
		case now != was:
			stayedMoved++
		}
	}
	t.Logf("users per instance %v; after %s left, %d of %d users moved (%.1f%%, 1/N = 25%%), %d others moved",
		spread, leaving, moved, users, 100*float64(moved)/users, stayedMoved)
	if stayedMoved != 0 {
		t.Errorf("%d users of the instances that stayed moved: only %s's users should", stayedMoved, leaving)
	}
	if moved < users/8 || moved > users/2 {
		t.Errorf("%d of %d users moved, want about 1/4 (the leaving instance's share)", moved, users)
	}
}

// TestRequestMirrorPercentage: an HTTPRoute mirroring 30% of its requests
// to a second service: over 1000 requests, 30% ± 5% of copies arrive (with
// -shadow appended to their Host), every primary response is the primary's
// own; and while the mirror holds every copy, the primary requests are
// served all the same (they never wait for their copies).
func TestRequestMirrorPercentage(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var mu sync.Mutex
	holding := false
	gate := make(chan struct{})
	var held atomic.Int64
	var wrongHost atomic.Int64
	shadow := startTestBackend(c, "shadow", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
		if r.Host != "shop.example.com-shadow" {
			wrongHost.Add(1)
		}
		mu.Lock()
		hold, g := holding, gate
		mu.Unlock()
		if hold {
			held.Add(1)
			select {
			case <-g:
			case <-b.closed:
			}
		}
		return false
	})
	primary := startTestBackend(c, "primary", nil)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, serviceOf("orders", "primary"), serviceOf("orders-v2", "shadow"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: edge}]
  rules:
    - filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: orders-v2, port: 80}
            percent: 30
      backendRefs: [{name: orders, port: 80}]
`))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	host := "Host: shop.example.com"
	c.expectEventually("orders via the gateway", 15*time.Second, gw, []string{host}, func(r *response) error {
		if r.status != http.StatusOK || r.body != "primary" {
			return fmt.Errorf("%d %.200s", r.status, r.body)
		}
		return nil
	})
	shadowBefore, primaryBefore := shadow.requests.Load(), primary.requests.Load()
	const requests = 1000
	for i := range requests {
		r, err := get(gw, host)
		if err != nil || r.status != http.StatusOK || r.body != "primary" || r.header.Get("X-Backend") != "primary" {
			t.Fatalf("request %d: %v %v, want the primary's own 200", i, err, r)
		}
	}
	// The copies are sent in the background: wait until none is still
	// arriving (the count unchanged over a poll).
	last := int64(-1)
	eventually(t, 15*time.Second, "every copy arrived", func() error {
		n := shadow.requests.Load() - shadowBefore
		if n != last {
			last = n
			return fmt.Errorf("%d copies so far", n)
		}
		return nil
	})
	copies := shadow.requests.Load() - shadowBefore
	t.Logf("%d requests, %d mirrored (%.1f%%, configured 30%%)", requests, copies, 100*float64(copies)/requests)
	if copies < 250 || copies > 350 {
		t.Errorf("%d of %d requests mirrored, want 30%% ± 5%%", copies, requests)
	}
	if got := primary.requests.Load() - primaryBefore; got != requests {
		t.Errorf("the primary received %d of %d requests", got, requests)
	}
	if n := wrongHost.Load(); n != 0 {
		t.Errorf("%d copies without the Host shop.example.com-shadow", n)
	}

	// A mirror that never answers does not hold the primary requests: once
	// it holds copies, 50 more requests are served all the same.
	mu.Lock()
	holding = true
	mu.Unlock()
	serve := func(what string, n int) {
		t.Helper()
		for i := range n {
			if r, err := get(gw, host); err != nil || r.status != http.StatusOK || r.body != "primary" {
				t.Fatalf("%s: request %d: %v %v", what, i, err, r)
			}
		}
	}
	eventually(t, 15*time.Second, "copies held by the mirror", func() error {
		serve("until the mirror holds copies", 10)
		if held.Load() == 0 {
			return errors.New("none held")
		}
		return nil
	})
	serve("with the mirror holding copies", 50)
	t.Logf("50 requests served while the mirror held %d copies it never answered", held.Load())
	mu.Lock()
	close(gate)
	holding = false
	mu.Unlock()
}
