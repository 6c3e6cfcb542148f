package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// blackHole makes addr a loopback port whose connects never complete: a
// socket listening there with a backlog of 0 that never accepts, its one
// accept-queue slot taken by the test, so that the kernel drops every
// further SYN (the client retransmits until its connect timeout). No
// timing is involved: the queue is full before the test proceeds.
func blackHole(t *testing.T, addr string) {
	t.Helper()
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(host).To4()
	if ip == nil {
		t.Fatalf("black hole %s: not an IPv4 address", addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { _ = syscall.Close(fd) })
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	if err := syscall.Bind(fd, sa); err != nil {
		t.Fatalf("black hole %s: %v", addr, err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("black hole %s: %v", addr, err)
	}
	// Fill the accept queue: connects succeed until it is full, then hang.
	for i := 0; ; i++ {
		conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			return // full: this connect was never answered
		}
		t.Cleanup(func() { _ = conn.Close() })
		if i == 16 {
			t.Fatalf("black hole %s: 16 connects completed, the accept queue does not fill", addr)
		}
	}
}

// clusterPending is the number of requests pending (waiting for a
// connection being opened) in the cluster of svc at a proxy's /clusters.
func clusterPending(admin, svc string) (int64, error) {
	resp, err := client.Get("http://" + admin + "/clusters")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Name            string `json:"name"`
			CircuitBreakers *struct {
				PendingRequests int64 `json:"pending_requests"`
			} `json:"circuit_breakers"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return 0, err
	}
	for _, c := range dump.Clusters {
		if strings.Contains(c.Name, "/"+svc+":") && c.CircuitBreakers != nil {
			return c.CircuitBreakers.PendingRequests, nil
		}
	}
	return 0, fmt.Errorf("no circuit breaker on a cluster of %s at %s", svc, admin)
}

// TestTrafficPolicyMaxPendingRequests: with circuitBreaker
// maxPendingRequests: 1, a request waiting for a connection that is being
// opened (to an instance whose connects hang) is pending; a second request
// needing a connection meanwhile is refused at once, 503 with
// x-meshgate-overloaded: max_pending_requests, while the first is still
// pending; the first fails when its connect times out. At the gateway and
// at a sidecar.
func TestTrafficPolicyMaxPendingRequests(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	startTestBackend(c, "up", nil)
	blackHole(t, c.addr("hole"))
	policyTo := func(instance string) string {
		return yamlDocs(edgeGateway, routeTo("pend"), meshServices("client"), serviceOf("pend", instance),
			trafficPolicy("pend-breaker", "pend", `
  circuitBreaker: {maxPendingRequests: 1}
  timeouts: {connect: 4s}
`))
	}
	c.policy("traffic.yaml", policyTo("up"))
	c.startControlPlane()
	entries := startBothEntries(c, "pend")
	c.policy("traffic.yaml", policyTo("hole"))
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": the hanging instance in the cluster", func() error {
			_, err := endpointState(e.admin, c.addr("hole"))
			return err
		})
	}
	for _, e := range entries {
		first := make(chan *response, 1)
		go func() {
			r, err := e.get("/first")
			if err != nil {
				r = &response{body: err.Error()}
			}
			first <- r
		}()
		eventually(t, 10*time.Second, e.name+": the first request pending", func() error {
			n, err := clusterPending(e.admin, "pend")
			if err == nil && n != 1 {
				err = fmt.Errorf("%d pending requests, want 1", n)
			}
			return err
		})
		r, err := e.get("/second")
		select {
		case r1 := <-first:
			t.Fatalf("%s: the first request ended (%d %q) before the second was answered", e.name, r1.status, r1.body)
		default:
		}
		if err != nil || r.status != http.StatusServiceUnavailable || r.header.Get("X-Meshgate-Overloaded") != "max_pending_requests" {
			t.Errorf("%s: the second request: %v %+v; want 503 with x-meshgate-overloaded: max_pending_requests", e.name, err, r)
		}
		if r1 := <-first; r1.status != http.StatusServiceUnavailable || r1.header.Get("X-Meshgate-Overloaded") != "" {
			t.Errorf("%s: the first request: %d %v %q; want a 503 connect failure", e.name, r1.status, r1.header, r1.body)
		}
	}
}

// TestTrafficPolicyConnectTimeout: timeouts.connect bounds a connect that
// never completes. With a retry on connect-failure, every request to a
// service of one hanging and one serving instance is answered by the
// serving one, those first sent to the hanging one after the connect
// timeout. Without the retry, a request sent to the hanging instance is a
// 503 after the connect timeout (well before the 5 s default), flagged UF
// in the access log. At the gateway and at a sidecar.
func TestTrafficPolicyConnectTimeout(t *testing.T) {
	t.Parallel()
	const connectTimeout = 500 * time.Millisecond
	c := newCluster(t)
	startTestBackend(c, "up", nil)
	blackHole(t, c.addr("hole"))
	logFile := filepath.Join(t.TempDir(), "access.log")
	policyWith := func(retry string) string {
		return yamlDocs(edgeGateway, routeTo("ct"), meshServices("client"), serviceOf("ct", "up", "hole"),
			trafficPolicy("ct-timeouts", "ct", `
  timeouts: {connect: 500ms}
`+retry), fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: %q}
`, logFile))
	}
	c.policy("traffic.yaml", policyWith(`  retry: {attempts: 1, retryOn: [connect-failure], backoff: {base: 1ms}}
`))
	c.startControlPlane()
	entries := startBothEntries(c, "ct")
	for _, e := range entries {
		slow := 0
		for i := range 10 {
			start := time.Now()
			r, err := e.get("/retried")
			elapsed := time.Since(start)
			if err != nil || r.status != http.StatusOK || r.header.Get("X-Backend") != "up" {
				t.Fatalf("%s: request %d: %v %+v; want the serving instance's 200", e.name, i, err, r)
			}
			if elapsed >= connectTimeout {
				slow++
			}
		}
		if slow == 0 {
			t.Errorf("%s: none of 10 requests waited for the connect timeout: none was sent to the hanging instance first", e.name)
		}
	}
	c.policy("traffic.yaml", policyWith(""))
	for _, e := range entries {
		eventually(t, 20*time.Second, e.name+": a connect failure without retry", func() error {
			start := time.Now()
			r, err := e.get("/unretried")
			elapsed := time.Since(start)
			if err != nil {
				return err
			}
			if r.status != http.StatusServiceUnavailable {
				return fmt.Errorf("%d from %q", r.status, r.header.Get("X-Backend"))
			}
			if elapsed < connectTimeout || elapsed >= 4*time.Second {
				t.Errorf("%s: the connect failure answered after %v, want the %v connect timeout (default 5s)", e.name, elapsed, connectTimeout)
			}
			return nil
		})
	}
	lines := waitLines(t, logFile, 2, "the connect failures' lines", func(l accessLine) bool {
		return l.str("path") == "/unretried" && l.code() == http.StatusServiceUnavailable
	})
	for _, l := range lines {
		if !strings.Contains(l.str("response_flags"), "UF") {
			t.Errorf("access log line %v: want the response flag UF", l)
		}
	}
}

// connTracker counts a server's connections by state (http.Server
// ConnState): opened, and open now.
type connTracker struct {
	mu     sync.Mutex
	open   map[net.Conn]bool
	opened int
}

func (ct *connTracker) track(conn net.Conn, s http.ConnState) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	switch s {
	case http.StateNew:
		ct.open[conn] = true
		ct.opened++
	case http.StateClosed, http.StateHijacked:
		delete(ct.open, conn)
	}
}

func (ct *connTracker) counts() (opened, open int) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.opened, len(ct.open)
}

// TestTrafficPolicyUpstreamIdleTimeout: timeouts.idle.upstream closes a
// pooled connection to an instance once idle that long: the instance sees
// every connection of both proxies closed without closing any itself, and
// the next request opens a new one and is served. At the gateway and at a
// sidecar.
func TestTrafficPolicyUpstreamIdleTimeout(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	tracker := &connTracker{open: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", c.addr("idler"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, ConnState: tracker.track,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
			w.Header().Set("X-Backend", "idler")
			_, _ = io.WriteString(w, "idler")
		})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("idle"), meshServices("client"), serviceOf("idle", "idler"),
		trafficPolicy("idle-timeouts", "idle", `
  timeouts: {idle: {upstream: 500ms}}
`)))
	c.startControlPlane()
	entries := startBothEntries(c, "idle")
	allClosed := func() error {
		if opened, open := tracker.counts(); open != 0 {
			return fmt.Errorf("%d of %d connections still open", open, opened)
		}
		return nil
	}
	eventually(t, 15*time.Second, "the proxies' idle connections closed", allClosed)
	for _, e := range entries {
		before, _ := tracker.counts()
		r, err := e.get("/again")
		if err != nil || r.status != http.StatusOK || r.body != "idler" {
			t.Fatalf("%s: after the idle close: %v %+v; want the instance's 200", e.name, err, r)
		}
		if opened, _ := tracker.counts(); opened <= before {
			t.Errorf("%s: the request after the idle close opened no connection", e.name)
		}
		eventually(t, 15*time.Second, e.name+": the new connection closed once idle", allClosed)
	}
}

// TestTrafficPolicyActiveCheckAndConsulHealth: with an active health
// check on a service discovered in Consul, an instance gets traffic only
// when it passes both: one passing in Consul but failing the active check
// gets none, nor does one passing the active check whose Consul check
// turns critical; each comes back once its failing check passes.
func TestTrafficPolicyActiveCheckAndConsulHealth(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)
	var sickFailing atomic.Bool
	sickFailing.Store(true)
	sick := startTestBackend(c, "sick", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/healthz" && sickFailing.Load() {
			http.Error(w, "failing", http.StatusInternalServerError)
			return true
		}
		return false
	})
	critical := startTestBackend(c, "critical", nil)
	steady := startTestBackend(c, "steady", nil)
	agent := consul.client.Agent()
	for _, b := range []*testBackend{sick, critical, steady} {
		host, portText, _ := net.SplitHostPort(b.addr)
		port, _ := strconv.Atoi(portText)
		if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: "orders-" + b.name, Name: "orders", Address: host, Port: port,
			Check: &api.AgentServiceCheck{CheckID: "orders-" + b.name + "-ttl", TTL: "10m", Status: api.HealthPassing}}); err != nil {
			t.Fatal(err)
		}
	}
	c.gateway("edge")
	c.policy("routes.yaml", yamlDocs(routeTo("orders"), trafficPolicy("orders-check", "orders", `
  healthCheck: {http: {path: /healthz}, interval: 200ms, timeout: 1s, unhealthyThreshold: 1, healthyThreshold: 1}
`)))
	gw := "http://" + c.addr("gw") + "/"
	admin := c.addr("gateway-admin-edge")
	activeChecks := func(want map[*testBackend]string) func() error {
		return func() error {
			for b, check := range want {
				s, err := endpointState(admin, b.addr)
				if err != nil {
					return err
				}
				if s.ActiveCheck != check {
					return fmt.Errorf("%s: active check %q, want %q", b.name, s.ActiveCheck, check)
				}
			}
			return nil
		}
	}
	served := func(n int) (map[string]int, error) {
		seen := map[string]int{}
		for range n {
			r, err := get(gw)
			if err != nil {
				return nil, err
			}
			if r.status != http.StatusOK {
				return nil, fmt.Errorf("%d %.200s", r.status, r.body)
			}
			seen[r.header.Get("X-Backend")]++
		}
		return seen, nil
	}
	eventually(t, 20*time.Second, "the active checks", activeChecks(map[*testBackend]string{sick: "failing", critical: "passing", steady: "passing"}))
	eventually(t, 10*time.Second, "the instances passing both checks served", func() error {
		seen, err := served(30)
		if err == nil && (seen["sick"] != 0 || seen["critical"] == 0 || seen["steady"] == 0) {
			err = fmt.Errorf("30 requests went to %v, want some to critical and steady, none to sick", seen)
		}
		return err
	})

	// Consul's check of an instance passing the active check turns critical.
	if err := agent.UpdateTTL("orders-critical-ttl", "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the Consul-critical instance out of rotation", func() error {
		seen, err := served(30)
		if err == nil && seen["steady"] != 30 {
			err = fmt.Errorf("30 requests went to %v, want all to steady", seen)
		}
		return err
	})
	before := critical.requests.Load() + sick.requests.Load()
	seen, err := served(30)
	if err != nil {
		t.Fatal(err)
	}
	if got := critical.requests.Load() + sick.requests.Load() - before; got != 0 || seen["steady"] != 30 {
		t.Errorf("30 requests went to %v (%d reached sick or critical), want all to the instance passing both checks", seen, got)
	}

	// Each comes back once its failing check passes.
	sickFailing.Store(false)
	if err := agent.UpdateTTL("orders-critical-ttl", "back", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "both instances back", func() error {
		seen, err := served(30)
		if err == nil && (seen["sick"] == 0 || seen["critical"] == 0) {
			err = fmt.Errorf("30 requests went to %v, want some to each instance", seen)
		}
		return err
	})
}

// TestTrafficPolicyFaultDelayPercentage: a fault delay of 250ms for 50% of
// the requests delays about half of 200 requests: the number that took at
// least the delay is within a wide binomial bound (mean 100, standard
// deviation 7; an undelayed request slowed by the load may add to it). At
// the gateway and at a sidecar.
func TestTrafficPolicyFaultDelayPercentage(t *testing.T) {
	t.Parallel()
	const (
		delay    = 250 * time.Millisecond
		requests = 200
		workers  = 10
	)
	c := newCluster(t)
	startTestBackend(c, "slowish", nil)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("half"), meshServices("client"), serviceOf("half", "slowish"),
		trafficPolicy("half-delay", "half", `
  faultInjection:
    delay: {fixed: 250ms, percent: 50}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "half") {
		var delayed, failed atomic.Int64
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= requests {
					start := time.Now()
					r, err := e.get("/")
					if err != nil || r.status != http.StatusOK {
						failed.Add(1)
						continue
					}
					if time.Since(start) >= delay {
						delayed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("%s: %d of %d requests failed", e.name, failed.Load(), requests)
		}
		t.Logf("%s: %d of %d requests took at least %v", e.name, delayed.Load(), requests, delay)
		if d := delayed.Load(); d < 65 || d > 150 {
			t.Errorf("%s: %d of %d requests took at least the %v delay, want about half (65-150)", e.name, d, requests, delay)
		}
	}
}
