package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTrafficPolicyFaultDelayAndGRPCAbort: a TrafficPolicy fault section
// with a delay and a gRPC abort, both for every request carrying X-Chaos:
// such a request is held at least the delay and answered by the proxy
// with grpc-status 14 (UNAVAILABLE), never reaching the service; a
// request without the header is served as usual. The same at the gateway
// and at a sidecar.
func TestTrafficPolicyFaultDelayAndGRPCAbort(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	svc := startTestBackend(c, "chaos", nil)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("chaos"), meshServices("client"), serviceOf("chaos", "chaos"),
		trafficPolicy("chaos-faults", "chaos", `
  faultInjection:
    delay: {fixed: 300ms, percent: 100}
    abort: {grpcStatus: 14, percent: 100}
    onlyWithHeader: {name: x-chaos, value: "on"}
`)))
	c.startControlPlane()
	const delay = 300 * time.Millisecond
	for _, e := range startBothEntries(c, "chaos") {
		before := svc.requests.Load()
		start := time.Now()
		r, err := e.get("/", "X-Chaos: on")
		elapsed := time.Since(start)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		if r.status != http.StatusOK || r.header.Get("Grpc-Status") != "14" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/grpc") {
			t.Errorf("%s: with X-Chaos: %d, headers %v; want 200 with grpc-status 14", e.name, r.status, r.header)
		}
		if elapsed < delay {
			t.Errorf("%s: with X-Chaos: answered after %v, want at least the %v delay", e.name, elapsed, delay)
		}
		if got := svc.requests.Load() - before; got != 0 {
			t.Errorf("%s: the service received %d aborted requests, want none", e.name, got)
		}
		r, err = e.get("/")
		if err != nil || r.status != http.StatusOK || r.header.Get("Grpc-Status") != "" || r.body != "chaos" {
			t.Errorf("%s: without X-Chaos: %v %+v; want the service's 200", e.name, err, r)
		}
	}
}

// TestTrafficPolicyCookieHash: a ring hash on a cookie the proxy sets
// when the request has none: the first response of a client carries
// Set-Cookie, and every request with that cookie goes to one instance of
// three (50 requests), at the gateway and at a sidecar.
func TestTrafficPolicyCookieHash(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	for _, n := range []string{"s1", "s2", "s3"} {
		startTestBackend(c, n, nil)
	}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("sticky"), meshServices("client"), serviceOf("sticky", "s1", "s2", "s3"),
		trafficPolicy("sticky-cookie", "sticky", `
  loadBalancer:
    type: RingHash
    hash: {cookie: {name: session, ttl: 1h, path: /}}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "sticky") {
		var cookie string
		eventually(t, 15*time.Second, e.name+": a session cookie", func() error {
			r, err := e.get("/")
			if err != nil {
				return err
			}
			for _, sc := range r.header.Values("Set-Cookie") {
				if strings.HasPrefix(sc, "session=") {
					cookie, _, _ = strings.Cut(sc, ";")
					return nil
				}
			}
			return fmt.Errorf("no session cookie in %v", r.header)
		})
		seen := map[string]int{}
		for range 50 {
			r, err := e.get("/", "Cookie: "+cookie)
			if err != nil {
				t.Fatalf("%s: %v", e.name, err)
			}
			if r.header.Get("Set-Cookie") != "" {
				t.Errorf("%s: a request with the cookie got Set-Cookie %q", e.name, r.header.Get("Set-Cookie"))
			}
			seen[r.header.Get("X-Backend")]++
		}
		if len(seen) != 1 {
			t.Errorf("%s: 50 requests with %s went to %v, want one instance", e.name, cookie, seen)
		}
	}
}

// TestTrafficPolicyRetriesIdempotentOnly: a TrafficPolicy retrying 5xx
// twice, against an instance that always answers 503: a GET is tried
// three times, a POST (not idempotent, not in the default methods) once,
// and a POST is retried too once the policy lists it. The same at the
// gateway and at a sidecar.
func TestTrafficPolicyRetriesIdempotentOnly(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	down := startTestBackend(c, "down", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/" {
			return false // the entry points' readiness check
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	policyWith := func(methods string) string {
		return yamlDocs(edgeGateway, routeTo("flaky"), meshServices("client"), serviceOf("flaky", "down"),
			trafficPolicy("flaky-retry", "flaky", `
  retry: {attempts: 2, retryOn: [5xx], backoff: {base: 1ms}`+methods+`}
`))
	}
	c.policy("traffic.yaml", policyWith(""))
	c.startControlPlane()
	entries := startBothEntries(c, "flaky")
	tries := func(e entryPoint, method string) int64 {
		t.Helper()
		before := down.requests.Load()
		r, err := do(method, e.base+"/fail", e.headers...)
		if err != nil || r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %s: %v %+v; want the instance's 503", e.name, method, err, r)
		}
		return down.requests.Load() - before
	}
	for _, e := range entries {
		if got := tries(e, http.MethodGet); got != 3 {
			t.Errorf("%s: GET tried %d times, want 3", e.name, got)
		}
		if got := tries(e, http.MethodPost); got != 1 {
			t.Errorf("%s: POST tried %d times, want 1 (not retried)", e.name, got)
		}
	}
	c.policy("traffic.yaml", policyWith(", methods: [GET, POST]"))
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": POST retried", func() error {
			if got := tries(e, http.MethodPost); got != 3 {
				return fmt.Errorf("POST tried %d times, want 3", got)
			}
			return nil
		})
	}
}

// TestTrafficPolicyEjectedInstanceComesBack: an instance ejected by
// outlier detection (consecutive 5xx) gets no traffic while ejected, and
// once it answers again it comes back after the base ejection time: it is
// no longer ejected and receives requests. At the gateway and at a
// sidecar (each proxy ejects on its own).
func TestTrafficPolicyEjectedInstanceComesBack(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var failing atomic.Bool
	flaky := startTestBackend(c, "flaky", func(_ *testBackend, w http.ResponseWriter, _ *http.Request) bool {
		if failing.Load() {
			http.Error(w, "failing", http.StatusInternalServerError)
			return true
		}
		return false
	})
	startTestBackend(c, "steady", nil)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), serviceOf("echo", "flaky", "steady"),
		trafficPolicy("echo-outliers", "echo", `
  outlierDetection: {consecutive5xx: 3, interval: 100ms, baseEjectionTime: 1s, maxEjectionPercent: 50}
`)))
	c.startControlPlane()
	entries := startBothEntries(c, "echo")
	failing.Store(true)
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": the failing instance ejected", func() error {
			for range 10 {
				if _, err := e.get("/"); err != nil {
					return err
				}
			}
			if s, err := endpointState(e.admin, flaky.addr); err != nil || !s.Ejected {
				return fmt.Errorf("not ejected: %+v %v", s, err)
			}
			return nil
		})
	}
	failing.Store(false)
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": the instance back", func() error {
			before := flaky.requests.Load()
			for range 10 {
				if r, err := e.get("/"); err != nil || r.status != http.StatusOK {
					return fmt.Errorf("%v %+v", err, r)
				}
			}
			if s, err := endpointState(e.admin, flaky.addr); err != nil || s.Ejected {
				return fmt.Errorf("still ejected: %+v %v", s, err)
			}
			if flaky.requests.Load() == before {
				return errors.New("no request reached it")
			}
			return nil
		})
	}
}

// TestTrafficPolicyTCPHealthCheck: an active TCP health check marks an
// instance that accepts no connections failing (the other passing) and
// sends it no requests; once it listens, its check passes and it gets
// requests again. At the gateway and at a sidecar.
func TestTrafficPolicyTCPHealthCheck(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	up := startTestBackend(c, "up", nil)
	c.addr("late") // reserved: nothing listens there yet
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), serviceOf("echo", "up", "late"),
		trafficPolicy("echo-tcp-check", "echo", `
  healthCheck: {tcp: {}, interval: 200ms, timeout: 1s, unhealthyThreshold: 2, healthyThreshold: 1}
`)))
	c.startControlPlane()
	entries := startBothEntries(c, "echo")
	checks := func(e entryPoint) (string, string, error) {
		u, err := endpointState(e.admin, up.addr)
		if err != nil {
			return "", "", err
		}
		l, err := endpointState(e.admin, c.addr("late"))
		return u.ActiveCheck, l.ActiveCheck, err
	}
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": the closed instance failing its check", func() error {
			u, l, err := checks(e)
			if err == nil && (u != "passing" || l != "failing") {
				err = fmt.Errorf("checks: up %q, late %q", u, l)
			}
			return err
		})
		for i := range 20 {
			if r, err := e.get("/"); err != nil || r.status != http.StatusOK || r.header.Get("X-Backend") != "up" {
				t.Fatalf("%s: request %d: %v %+v; want the passing instance's 200", e.name, i, err, r)
			}
		}
	}
	late := startTestBackend(c, "late", nil)
	for _, e := range entries {
		eventually(t, 15*time.Second, e.name+": the instance passing once it listens, and served", func() error {
			if _, l, err := checks(e); err != nil || l != "passing" {
				return fmt.Errorf("late %q %v", l, err)
			}
			before := late.requests.Load()
			for range 10 {
				if _, err := e.get("/"); err != nil {
					return err
				}
			}
			if late.requests.Load() == before {
				return errors.New("no request reached it")
			}
			return nil
		})
	}
}

// TestTrafficPolicyLeastRequest: least request (power of two choices) on
// two instances, one holding requests in flight: of 200 sequential
// requests it gets about a quarter (both draws on it), far from round
// robin's half (at most 40% asserted: 5 standard deviations). At the
// gateway and at a sidecar.
func TestTrafficPolicyLeastRequest(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	release := make(chan struct{})
	var held atomic.Int64
	busy := startTestBackend(c, "busy", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/hold" {
			held.Add(1)
			select {
			case <-release:
			case <-b.closed:
			case <-r.Context().Done():
			}
		}
		return false
	})
	startTestBackend(c, "idle", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/hold" {
			w.WriteHeader(http.StatusTeapot) // a hold that landed here: answered at once
			return true
		}
		return false
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("lr"), meshServices("client"), serviceOf("lr", "busy", "idle"),
		trafficPolicy("lr-balance", "lr", `
  loadBalancer: {type: LeastRequest}
`)))
	c.startControlPlane()
	entries := startBothEntries(c, "lr")
	defer close(release)
	for _, e := range entries {
		// Hold 4 requests at busy (those the balancer sends to idle come
		// back at once, 418, and are sent again).
		for want := held.Load() + 4; held.Load() < want; {
			prev := held.Load()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = e.get("/hold")
			}()
			eventually(t, 10*time.Second, e.name+": a hold placed or answered", func() error {
				select {
				case <-done:
					return nil
				default:
				}
				if held.Load() == prev {
					return errors.New("pending")
				}
				return nil
			})
		}
		before := busy.requests.Load()
		for i := range 200 {
			if r, err := e.get("/"); err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: request %d: %v %+v", e.name, i, err, r)
			}
		}
		got := busy.requests.Load() - before
		t.Logf("%s: the instance with requests in flight got %d of 200 requests", e.name, got)
		if got > 80 {
			t.Errorf("%s: the instance with requests in flight got %d of 200 requests, want about 50 (at most 80)", e.name, got)
		}
	}
}

// TestTrafficPolicyRequestAndIdleTimeouts: a TrafficPolicy with a request
// timeout of 2s and a downstream idle timeout of 500ms. A request the
// service never answers gets 504 once nothing moved for the idle timeout;
// a response whose body stops moving is cut short (never complete); a
// response moving a byte every 100ms completes when it takes 500ms, and is
// cut short at the request timeout when it would take 3s. At the gateway
// and at a sidecar.
func TestTrafficPolicyRequestAndIdleTimeouts(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	startTestBackend(c, "slow", func(b *testBackend, w http.ResponseWriter, r *http.Request) bool {
		drip := func(n int) {
			w.Header().Set("X-Backend", "slow")
			for range n {
				_, _ = w.Write([]byte("x"))
				http.NewResponseController(w).Flush() //nolint:errcheck // the proxy may have gone
				select {
				case <-time.After(100 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		}
		switch r.URL.Path {
		case "/hang": // never answers
			b.hang(r)
		case "/stall": // a head and a first byte, then nothing
			drip(1)
			b.hang(r)
		case "/drip-500ms":
			drip(5)
		case "/drip-3s":
			drip(30)
		default:
			return false
		}
		return true
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("slow"), meshServices("client"), serviceOf("slow", "slow"),
		trafficPolicy("slow-timeouts", "slow", `
  timeouts: {request: 2s, idle: {downstream: 500ms}}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "slow") {
		start := time.Now()
		r, err := e.get("/hang")
		if err != nil || r.status != http.StatusGatewayTimeout {
			t.Errorf("%s: a request never answered: %v %+v; want 504", e.name, err, r)
		}
		if elapsed := time.Since(start); elapsed < 500*time.Millisecond {
			t.Errorf("%s: the 504 came after %v, before the 500ms idle timeout", e.name, elapsed)
		}
		if r, err := e.get("/stall"); err == nil {
			t.Errorf("%s: a stalled response completed: %d %q; want it cut short", e.name, r.status, r.body)
		}
		if r, err := e.get("/drip-500ms"); err != nil || r.status != http.StatusOK || r.body != strings.Repeat("x", 5) {
			t.Errorf("%s: a response moving every 100ms for 500ms: %v %+v; want it whole", e.name, err, r)
		}
		start = time.Now()
		if r, err := e.get("/drip-3s"); err == nil {
			t.Errorf("%s: a response moving every 100ms for 3s completed: %d %q; want it cut at the 2s request timeout", e.name, r.status, r.body)
		}
		if elapsed := time.Since(start); elapsed < 2*time.Second {
			t.Errorf("%s: the 3s response was cut after %v, before the 2s request timeout", e.name, elapsed)
		}
	}
}

// TestTrafficPolicyBalancers: Maglev on a header sends each key to one
// instance of three (and different keys spread), a ring hash on the
// source IP sends one client to one instance, and Random spreads over
// both instances; through the gateway (a rule per service) and a sidecar
// (by Host).
func TestTrafficPolicyBalancers(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	for _, n := range []string{"mg-1", "mg-2", "mg-3", "sip-1", "sip-2", "sip-3", "rnd-1", "rnd-2"} {
		startTestBackend(c, n, nil)
	}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, meshServices("client"),
		serviceOf("mg", "mg-1", "mg-2", "mg-3"), serviceOf("sip", "sip-1", "sip-2", "sip-3"), serviceOf("rnd", "rnd-1", "rnd-2"),
		trafficPolicy("mg-lb", "mg", "  loadBalancer: {type: Maglev, hash: {header: x-user}}\n"),
		trafficPolicy("sip-lb", "sip", "  loadBalancer: {type: RingHash, hash: {sourceIP: true}}\n"),
		trafficPolicy("rnd-lb", "rnd", "  loadBalancer: {type: Random}\n"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: balancers}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /mg}}]
      backendRefs: [{name: mg, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /sip}}]
      backendRefs: [{name: sip, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /rnd}}]
      backendRefs: [{name: rnd, port: 80}]
`))
	c.startControlPlane()
	c.startInstance(c.sidecar, "client", "client", "v1")
	c.gateway("edge")
	gw, out := "http://"+c.addr("gw"), "http://"+c.addr("client-out")
	answered := func(r *response) error {
		if r.status != http.StatusOK || r.header.Get("X-Backend") == "" {
			return fmt.Errorf("%d %.200s", r.status, r.body)
		}
		return nil
	}
	for _, svc := range []string{"mg", "sip", "rnd"} {
		c.expectEventually(svc+" via the gateway", 15*time.Second, gw+"/"+svc, nil, answered)
		c.expectEventually(svc+" via the sidecar", 15*time.Second, out+"/"+svc, []string{"Host: " + svc}, answered)
	}
	backends := func(entry, svc string, n int, headers ...string) map[string]int {
		t.Helper()
		url := gw + "/" + svc
		if entry == "sidecar" {
			url, headers = out+"/"+svc, append(headers, "Host: "+svc)
		}
		seen := map[string]int{}
		for range n {
			r, err := get(url, headers...)
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: %s: %v %+v", entry, svc, err, r)
			}
			seen[r.header.Get("X-Backend")]++
		}
		return seen
	}
	for _, entry := range []string{"gateway", "sidecar"} {
		keys := map[string]bool{}
		for _, user := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
			seen := backends(entry, "mg", 20, "X-User: "+user)
			if len(seen) != 1 {
				t.Errorf("%s: Maglev: user %s went to %v, want one instance", entry, user, seen)
			}
			for b := range seen {
				keys[b] = true
			}
		}
		if len(keys) < 2 {
			t.Errorf("%s: Maglev: 6 users all went to %v, want them spread", entry, keys)
		}
		if seen := backends(entry, "sip", 30); len(seen) != 1 {
			t.Errorf("%s: source IP hash: one client went to %v, want one instance", entry, seen)
		}
		if seen := backends(entry, "rnd", 100); len(seen) != 2 || seen["rnd-1"] < 20 || seen["rnd-2"] < 20 {
			t.Errorf("%s: Random: 100 requests went to %v, want both instances (at least 20 each)", entry, seen)
		}
	}
}

// TestTrafficPolicyRetriableStatusCodes: retryOn retriable-status-codes
// with 409: a 409 is retried (three tries with attempts 2), a 500 is not
// (one try). At the gateway and at a sidecar.
func TestTrafficPolicyRetriableStatusCodes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	codes := startTestBackend(c, "codes", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/conflict":
			w.WriteHeader(http.StatusConflict)
		case "/error":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			return false
		}
		return true
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("codes"), meshServices("client"), serviceOf("codes", "codes"),
		trafficPolicy("codes-retry", "codes", `
  retry: {attempts: 2, retryOn: [retriable-status-codes], retriableStatusCodes: [409], backoff: {base: 1ms}}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "codes") {
		for path, want := range map[string]struct {
			status int
			tries  int64
		}{"/conflict": {http.StatusConflict, 3}, "/error": {http.StatusInternalServerError, 1}} {
			before := codes.requests.Load()
			r, err := e.get(path)
			if err != nil || r.status != want.status {
				t.Fatalf("%s: %s: %v %+v; want %d", e.name, path, err, r, want.status)
			}
			if got := codes.requests.Load() - before; got != want.tries {
				t.Errorf("%s: %s tried %d times, want %d", e.name, path, got, want.tries)
			}
		}
	}
}

// TestTrafficPolicyMaxConnections: a circuit breaker of one connection:
// while a request holds the cluster's one connection, another request is
// refused at once (503, x-meshgate-overloaded: max_connections); once it
// is released, requests are served again on that connection. At the
// gateway and at a sidecar.
func TestTrafficPolicyMaxConnections(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var held atomic.Int64
	var mu sync.Mutex
	gate := make(chan struct{})
	startTestBackend(c, "one", func(b *testBackend, _ http.ResponseWriter, r *http.Request) bool {
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
		case <-r.Context().Done():
		}
		return false
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("one"), meshServices("client"), serviceOf("one", "one"),
		trafficPolicy("one-connection", "one", `
  circuitBreaker: {maxConnections: 1}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "one") {
		done := make(chan *response, 1)
		go func() {
			r, _ := e.get("/hold")
			done <- r
		}()
		eventually(t, 10*time.Second, e.name+": a request holding the connection", func() error {
			if held.Load() != 1 {
				return errors.New("not held yet")
			}
			return nil
		})
		r, err := e.get("/other")
		if err != nil || r.status != http.StatusServiceUnavailable || r.header.Get("X-Meshgate-Overloaded") != "max_connections" {
			t.Errorf("%s: a request while the connection is held: %v %+v; want 503 max_connections", e.name, err, r)
		}
		mu.Lock()
		close(gate)
		gate = make(chan struct{})
		mu.Unlock()
		if r := <-done; r == nil || r.status != http.StatusOK {
			t.Errorf("%s: the held request: %+v, want 200", e.name, r)
		}
		for i := range 10 {
			if r, err := e.get("/after"); err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: request %d after the release: %v %+v", e.name, i, err, r)
			}
		}
	}
}

// TestTrafficPolicyHTTPCheckStatusesAndHost: an active HTTP check with a
// host and expected statuses: the instance answering the check 204 for
// that host passes, the one answering 200 fails (200 is not expected) and
// gets no requests. At the gateway and at a sidecar.
func TestTrafficPolicyHTTPCheckStatusesAndHost(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	check := func(status int) func(*testBackend, http.ResponseWriter, *http.Request) bool {
		return func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/healthz" {
				return false
			}
			if r.Host != "checks.local" {
				w.WriteHeader(http.StatusMisdirectedRequest)
				return true
			}
			w.WriteHeader(status)
			return true
		}
	}
	good := startTestBackend(c, "answers-204", check(http.StatusNoContent))
	bad := startTestBackend(c, "answers-200", check(http.StatusOK))
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("checked"), meshServices("client"), serviceOf("checked", "answers-204", "answers-200"),
		trafficPolicy("checked-http", "checked", `
  healthCheck: {http: {path: /healthz, host: checks.local, expectedStatuses: [204]}, interval: 200ms, timeout: 1s, unhealthyThreshold: 1}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "checked") {
		eventually(t, 15*time.Second, e.name+": checks", func() error {
			g, err := endpointState(e.admin, good.addr)
			if err != nil {
				return err
			}
			b, err := endpointState(e.admin, bad.addr)
			if err == nil && (g.ActiveCheck != "passing" || b.ActiveCheck != "failing") {
				err = fmt.Errorf("204 for checks.local: %q, 200: %q", g.ActiveCheck, b.ActiveCheck)
			}
			return err
		})
		before := bad.requests.Load()
		for i := range 20 {
			if r, err := e.get("/"); err != nil || r.status != http.StatusOK || r.header.Get("X-Backend") != "answers-204" {
				t.Fatalf("%s: request %d: %v %+v; want the passing instance", e.name, i, err, r)
			}
		}
		if got := bad.requests.Load() - before; got != 0 {
			t.Errorf("%s: the failing instance received %d requests", e.name, got)
		}
	}
}

// ejectionState is the ejection part of an endpoint in /clusters.
type ejectionState struct {
	Address      string     `json:"address"`
	Ejected      bool       `json:"ejected"`
	EjectedUntil *time.Time `json:"ejected_until"`
	TimesEjected int64      `json:"times_ejected"`
}

// ejectionOf is the ejection state of the endpoint at addr in a proxy's
// /clusters.
func ejectionOf(admin, addr string) (ejectionState, error) {
	resp, err := client.Get("http://" + admin + "/clusters")
	if err != nil {
		return ejectionState{}, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Endpoints []ejectionState `json:"endpoints"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return ejectionState{}, err
	}
	for _, c := range dump.Clusters {
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e, nil
			}
		}
	}
	return ejectionState{}, fmt.Errorf("no endpoint %s at %s", addr, admin)
}

// TestTrafficPolicyEjectionTimeGrows: an instance ejected a second time is
// ejected for twice the base ejection time (Envoy's base × number of
// ejections): /clusters counts two ejections, and right after the second
// one it is ejected for more than the base time.
func TestTrafficPolicyEjectionTimeGrows(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var failing atomic.Bool
	flaky := startTestBackend(c, "flaky", func(_ *testBackend, w http.ResponseWriter, _ *http.Request) bool {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}
		return false
	})
	startTestBackend(c, "steady", nil)
	const base = 2 * time.Second
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), serviceOf("echo", "flaky", "steady"),
		trafficPolicy("echo-outliers", "echo", `
  outlierDetection: {consecutive5xx: 2, interval: 100ms, baseEjectionTime: 2s, maxEjectionPercent: 50}
`)))
	c.startControlPlane()
	c.gateway("edge")
	gw, admin := "http://"+c.addr("gw")+"/", c.addr("gateway-admin-edge")
	c.expectEventually("echo via the gateway", 15*time.Second, gw, nil, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("%d", r.status)
		}
		return nil
	})
	failing.Store(true)
	// ejectAgain sends requests until the instance is ejected for the n-th
	// time, and returns its state seen right then.
	ejectAgain := func(n int64) ejectionState {
		var s ejectionState
		eventually(t, 20*time.Second, fmt.Sprintf("ejection %d", n), func() error {
			for range 20 {
				if _, err := get(gw); err != nil {
					return err
				}
				var err error
				if s, err = ejectionOf(admin, flaky.addr); err != nil {
					return err
				}
				if s.Ejected && s.TimesEjected == n {
					return nil
				}
			}
			return fmt.Errorf("state %+v", s)
		})
		return s
	}
	first := ejectAgain(1)
	eventually(t, 20*time.Second, "back after the first ejection", func() error {
		if s, err := ejectionOf(admin, flaky.addr); err != nil || s.Ejected {
			return fmt.Errorf("%+v %v", s, err)
		}
		return nil
	})
	second := ejectAgain(2)
	seen := time.Now()
	if second.EjectedUntil == nil || second.EjectedUntil.Sub(seen) <= base {
		t.Errorf("second ejection until %v, seen at %v: want more than the base %v left (first: until %v)",
			second.EjectedUntil, seen, base, first.EjectedUntil)
	}
}

// TestTrafficPolicySuccessRateEjects: outlier detection by success rate
// (one standard deviation) ejects the one instance of three that fails
// half its requests, and only it; it then gets no requests.
func TestTrafficPolicySuccessRateEjects(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var n atomic.Int64
	flaky := startTestBackend(c, "flaky", func(_ *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/" && n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}
		return false
	})
	good := []*testBackend{startTestBackend(c, "good-1", nil), startTestBackend(c, "good-2", nil)}
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), serviceOf("echo", "good-1", "good-2", "flaky"),
		trafficPolicy("echo-success-rate", "echo", `
  outlierDetection:
    successRate: {minHosts: 3, requestVolume: 10, stdevFactor: 1000}
    interval: 200ms
    baseEjectionTime: 1m
    maxEjectionPercent: 34
`)))
	c.startControlPlane()
	c.gateway("edge")
	gw, admin := "http://"+c.addr("gw"), c.addr("gateway-admin-edge")
	c.expectEventually("echo via the gateway", 15*time.Second, gw+"/", nil, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("%d", r.status)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the instance failing half its requests ejected", func() error {
		for range 30 {
			if _, err := get(gw + "/work"); err != nil {
				return err
			}
		}
		e, err := endpointState(admin, flaky.addr)
		if err == nil && !e.Ejected {
			err = fmt.Errorf("not ejected: %+v", e)
		}
		return err
	})
	for _, g := range good {
		if e, err := endpointState(admin, g.addr); err != nil || e.Ejected {
			t.Errorf("instance %s: %+v %v, want not ejected", g.name, e, err)
		}
	}
	before := flaky.requests.Load()
	for i := range 30 {
		if r, err := get(gw + "/work"); err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d after the ejection: %v %+v", i, err, r)
		}
	}
	if got := flaky.requests.Load() - before; got != 0 {
		t.Errorf("the ejected instance received %d of 30 requests", got)
	}
}

// TestTrafficPolicySlowStart: with a 60s slow start window, an instance
// that joins a running service gets a small share of the requests at
// first (10% of its share, growing), not round robin's half: under a
// third of 100 requests just after it joined. At the gateway.
func TestTrafficPolicySlowStart(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	startTestBackend(c, "old", nil)
	joined := startTestBackend(c, "new", nil)
	policy := func(names ...string) string {
		return yamlDocs(edgeGateway, routeTo("warm"), serviceOf("warm", names...), trafficPolicy("warm-slow-start", "warm", `
  loadBalancer: {type: RoundRobin, slowStart: {window: 60s}}
`))
	}
	c.policy("traffic.yaml", policy("old"))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw") + "/"
	c.expectEventually("warm via the gateway", 15*time.Second, gw, nil, func(r *response) error {
		if r.status != http.StatusOK {
			return fmt.Errorf("%d", r.status)
		}
		return nil
	})
	c.policy("traffic.yaml", policy("old", "new"))
	eventually(t, 15*time.Second, "the new instance in the cluster", func() error {
		for range 20 {
			if r, err := get(gw); err != nil || r.header.Get("X-Backend") == "new" {
				return err
			}
		}
		return errors.New("no request reached it yet")
	})
	before := joined.requests.Load()
	for i := range 100 {
		if r, err := get(gw); err != nil || r.status != http.StatusOK {
			t.Fatalf("request %d: %v %+v", i, err, r)
		}
	}
	got := joined.requests.Load() - before
	t.Logf("the instance in slow start got %d of 100 requests", got)
	if got >= 33 {
		t.Errorf("the instance in slow start got %d of 100 requests, want under a third (round robin: half)", got)
	}
}

// TestTrafficPolicyMaxRetries: a circuit breaker of one retry in flight:
// while one request's retry is held at the service, another request that
// fails is not retried (its client gets the 503 of its one try), and the
// refusal is counted (max_retries); the held retry then succeeds. At the
// gateway and at a sidecar.
func TestTrafficPolicyMaxRetries(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var held atomic.Int64
	var mu sync.Mutex
	gate := make(chan struct{})
	svc := startTestBackend(c, "retried", func(b *testBackend, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/" {
			return false
		}
		if r.Header.Get("X-Envoy-Attempt-Count") == "1" {
			w.WriteHeader(http.StatusServiceUnavailable) // every first try fails
			return true
		}
		if r.URL.Path == "/hold" { // its retry waits for the gate
			mu.Lock()
			g := gate
			mu.Unlock()
			held.Add(1)
			defer held.Add(-1)
			select {
			case <-g:
			case <-b.closed:
			case <-r.Context().Done():
			}
		}
		return false
	})
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("retried"), meshServices("client"), serviceOf("retried", "retried"),
		trafficPolicy("retried-breaker", "retried", `
  retry: {attempts: 2, retryOn: [5xx], backoff: {base: 1ms}, attemptsHeader: true}
  circuitBreaker: {maxRetries: 1}
`)))
	c.startControlPlane()
	for _, e := range startBothEntries(c, "retried") {
		done := make(chan *response, 1)
		go func() {
			r, _ := e.get("/hold")
			done <- r
		}()
		eventually(t, 10*time.Second, e.name+": a retry held", func() error {
			if held.Load() != 1 {
				return errors.New("not held yet")
			}
			return nil
		})
		before := svc.requests.Load()
		r, err := e.get("/other")
		if err != nil || r.status != http.StatusServiceUnavailable {
			t.Errorf("%s: a failing request while a retry is in flight: %v %+v; want its own 503", e.name, err, r)
		}
		if got := svc.requests.Load() - before; got != 1 {
			t.Errorf("%s: the failing request was tried %d times, want 1 (its retry refused)", e.name, got)
		}
		mu.Lock()
		close(gate)
		gate = make(chan struct{})
		mu.Unlock()
		if r := <-done; r == nil || r.status != http.StatusOK {
			t.Errorf("%s: the held retry: %+v, want 200", e.name, r)
		}
		if overflows, err := clusterBreaker(e.admin, "retried"); err != nil || overflows["max_retries"] != 1 {
			t.Errorf("%s: overflows %v %v, want one max_retries", e.name, overflows, err)
		}
	}
}
