package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// localRateLimitPolicy: the service echo, a client behind a sidecar, a
// gateway route to echo, and a TrafficPolicy giving echo a local limit of
// rate requests a second (burst as many) per value of X-Client.
const localRateLimitPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-rate}
spec:
  targetRefs: [{kind: Service, name: echo}]
  rateLimit:
    local:
      rules:
      - limit: {requests: 20, unit: Second}
        key: {header: X-Client}
`

// rateWindow is what flood saw: requests answered 200 and 429, and the
// bounds of the window the proxy counted them in (the first request sent
// to the last answered, and the first answered to the last sent).
// floodPace is the least time between two requests of one flood worker.
const floodPace = 5 * time.Millisecond

type rateWindow struct {
	ok, limited  int
	outer, inner time.Duration
	last429      *response
}

// flood sends requests to url with headers from workers goroutines, each
// one after the other, paced at most one per floodPace per worker (far
// above the limits under test, without taking the shared machine), for
// about d.
func flood(t *testing.T, url string, headers []string, workers int, d time.Duration) rateWindow {
	t.Helper()
	var (
		mu                                   sync.Mutex
		w                                    rateWindow
		firstSent, firstDone, lastSent, last time.Time
		wg                                   sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			pace := time.NewTicker(floodPace)
			defer pace.Stop()
			for time.Since(start) < d {
				<-pace.C
				sent := time.Now()
				r, err := get(url, headers...)
				done := time.Now()
				mu.Lock()
				if firstSent.IsZero() || sent.Before(firstSent) {
					firstSent = sent
				}
				if sent.After(lastSent) {
					lastSent = sent
				}
				if err == nil {
					if firstDone.IsZero() || done.Before(firstDone) {
						firstDone = done
					}
					if done.After(last) {
						last = done
					}
					switch r.status {
					case http.StatusOK:
						w.ok++
					case http.StatusTooManyRequests:
						w.limited++
						w.last429 = r
					default:
						t.Errorf("%s: status %d: %.200s", url, r.status, r.body)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	w.outer, w.inner = last.Sub(firstSent), lastSent.Sub(firstDone)
	return w
}

// TestLocalRateLimit: a TrafficPolicy local limit of 20 requests a second
// per X-Client, at the gateway, lets through 20 (the full bucket) plus 20
// a second of the window over which a flood of requests was counted, within
// 5%, and answers the others 429 with Retry-After and the draft-03 and IETF
// rate limit headers; another client is not limited by the first one's
// flood; the same limit holds at a sidecar calling echo.
func TestLocalRateLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("traffic.yaml", yamlDocs(edgeGateway, routeTo("echo"), meshServices("client"), localRateLimitPolicy))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.startInstance(c.sidecar, "client", "client", "v1")
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	out := "http://" + c.addr("client-out")
	c.expectEventually("echo via gateway, limited", 10*time.Second, gw+"/", []string{"X-Client: probe"}, func(r *response) error {
		if err := servedBy("echo")(r); err != nil {
			return err
		}
		if r.header.Get("RateLimit-Policy") == "" {
			return fmt.Errorf("no RateLimit-Policy header yet: %v", r.header)
		}
		return nil
	})
	c.expectEventually("echo via the client's sidecar", 10*time.Second, out+"/", []string{"Host: echo", "X-Client: probe"}, servedBy("echo"))

	const rate, burst = 20, 20
	check := func(where string, w rateWindow) {
		t.Helper()
		lo := burst + rate*w.inner.Seconds()
		hi := burst + rate*w.outer.Seconds()
		t.Logf("%s: %d accepted, %d limited over %v..%v: want %.1f..%.1f ±5%%", where, w.ok, w.limited, w.inner, w.outer, lo, hi)
		if float64(w.ok) < lo*0.95 || float64(w.ok) > hi*1.05+1 {
			t.Errorf("%s: %d requests accepted, want %.1f to %.1f (±5%%)", where, w.ok, lo, hi)
		}
		if w.limited == 0 {
			t.Fatalf("%s: no request was limited", where)
		}
		r := w.last429
		if r.body != "local_rate_limited" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 429 %q with headers %v, want local_rate_limited and Retry-After", where, r.body, r.header)
		}
		for k, v := range map[string]string{
			"RateLimit-Policy": `"rule-0";q=20;w=1`, "X-RateLimit-Limit": "20, 20;w=1", "X-RateLimit-Remaining": "0",
		} {
			if got := r.header.Get(k); got != v {
				t.Errorf("%s: 429 %s = %q, want %q", where, k, got, v)
			}
		}
	}
	check("gateway", flood(t, gw+"/", []string{"X-Client: a"}, 2, 3*time.Second))
	if r, err := get(gw+"/", "X-Client: b"); err != nil || r.status != http.StatusOK {
		t.Errorf("another client after the flood: %v %v, want 200", r, err)
	}
	check("sidecar", flood(t, out+"/", []string{"Host: echo", "X-Client: s"}, 2, 3*time.Second))
}

// globalRateLimitPolicy: the gateway edge (run as three replicas) routing
// to echo, whose HTTPRoute has a global limit of 60 requests an hour per
// X-Client (failure mode Allow), another gateway (strict) whose every
// route has a global limit with failure mode Deny, and echo's own limit of 5 an hour
// per X-Client, which the sidecars calling it apply (the gateways' routes
// have their own); the rate-limit service at ${rls}.
const globalRateLimitPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  rateLimitService: {address: "${rls}", timeout: 1s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec: {gatewayClassName: meshgate, listeners: [{name: http, protocol: HTTP, port: ${gw.port}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: strict}
spec: {gatewayClassName: meshgate, listeners: [{name: http, protocol: HTTP, port: ${gw-strict.port}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{group: meshgate.dev, kind: Service, name: echo, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: strict-shop}
spec:
  parentRefs: [{name: strict}]
  rules: [{backendRefs: [{group: meshgate.dev, kind: Service, name: echo, port: 80}]}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: shop-global}
spec:
  targetRefs: [{kind: HTTPRoute, name: shop}]
  rateLimit:
    global:
      rules:
      - limit: {requests: 60, unit: Hour}
        key: {header: X-Client}
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-global}
spec:
  targetRefs: [{kind: Service, name: echo}]
  rateLimit:
    global:
      rules:
      - limit: {requests: 5, unit: Hour}
        key: {header: X-Client}
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: strict-global}
spec:
  targetRefs: [{kind: Gateway, name: strict}]
  rateLimit:
    global:
      failureMode: Deny
      rules:
      - limit: {requests: 1000, unit: Hour}
`

// filterStat reads one counter of a filter family from a proxy's /stats.
func filterStat(t *testing.T, admin, family, key string) uint64 {
	t.Helper()
	r, err := get("http://" + admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	var stats map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.body), &stats); err != nil {
		t.Fatalf("/stats: %v", err)
	}
	var counters map[string]uint64
	_ = json.Unmarshal(stats[family], &counters)
	return counters[key]
}

// TestGlobalRateLimit: a global limit of 60 requests an hour per client,
// counted by meshgate ratelimit in a real Redis, holds across three
// replicas of one Gateway (three meshgate gateway processes serving edge on
// one port with --reuse-port, each request on a new connection, which the
// kernel gives to one of them): 60 of 120 requests get through, ±5% (the
// count is exact unless the hour turned during the test, when two windows
// count), every replica served some, the others get 429 with
// x-envoy-ratelimited and the rate limit headers; another client has its
// own count; a sidecar calling echo applies echo's own limit (5 an hour).
// With Redis killed, the Allow gateway lets requests through and counts
// them (ratelimit: error, failure_mode_allowed) and the Deny gateway
// answers 500.
func TestGlobalRateLimit(t *testing.T) {
	t.Parallel()
	redis := startRedis(t)
	c := newCluster(t)
	rls := c.addr("rls")
	start(t, "ratelimit", "ratelimit", "--redis", redis.addr, "--listen", rls)
	c.policy("global.yaml", yamlDocs(globalRateLimitPolicy, meshServices("client")))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.startInstance(c.sidecar, "client", "client", "v1")
	var replicas []string // admin addresses
	for i := range 3 {
		admin := c.addr(fmt.Sprintf("gateway-admin-edge-%d", i))
		start(t, fmt.Sprintf("gateway edge replica %d", i), "gateway", "--name", "edge", "--reuse-port",
			"--id", fmt.Sprintf("gateway~edge~replica-%d", i), "--xds", c.xds, "--admin", admin,
			"--token", c.token("edge"), "--log-level", "debug")
		replicas = append(replicas, admin)
	}
	for _, admin := range replicas {
		c.waitReady(admin)
	}
	c.gateway("strict")
	gw, strict := "http://"+c.addr("gw"), "http://"+c.addr("gw-strict")
	// A new connection per request: the kernel picks a replica for each.
	const fresh = "Connection: close"
	eventually(t, 15*time.Second, "every replica of edge limits echo", func() error {
		for range 12 {
			r, err := get(gw+"/", "X-Client: probe", fresh)
			if err != nil {
				return err
			}
			if err := servedBy("echo")(r); err != nil {
				return err
			}
			if r.header.Get("X-RateLimit-Limit") == "" {
				return fmt.Errorf("no X-RateLimit-Limit yet: %v", r.header)
			}
		}
		return nil
	})
	c.expectEventually("echo via strict, limited", 15*time.Second, strict+"/", nil, func(r *response) error {
		if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") == "" {
			return fmt.Errorf("status %d, headers %v", r.status, r.header)
		}
		return nil
	})

	served := func() []float64 {
		out := make([]float64, len(replicas))
		for i, admin := range replicas {
			out[i] = requestsServed(t, admin)
		}
		return out
	}
	before := served()
	hour := time.Now().Truncate(time.Hour)
	ok, limited := 0, 0
	var last429 *response
	for i := range 120 {
		r, err := get(gw+"/", "X-Client: c1", fresh)
		if err != nil {
			t.Fatal(err)
		}
		switch r.status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			last429 = r
		default:
			t.Fatalf("request %d: %d %.200s", i, r.status, r.body)
		}
	}
	after := served()
	want := 60
	if time.Now().Truncate(time.Hour) != hour {
		want = 120 // two windows: at most twice the limit
		t.Logf("the hour turned during the test")
	}
	spread := make([]float64, len(replicas))
	for i := range spread {
		spread[i] = after[i] - before[i]
	}
	t.Logf("across three replicas of edge: %d accepted, %d limited; requests per replica %v", ok, limited, spread)
	if ok < 57 || ok > want || float64(ok) > 60*1.05 && want == 60 {
		t.Errorf("%d of 120 requests accepted across three replicas, want 60 (±5%%)", ok)
	}
	for i, n := range spread {
		if n == 0 {
			t.Errorf("replica %d served none of the 120 requests (%v): the test did not spread them", i, spread)
		}
	}
	if last429 == nil || last429.header.Get("X-Envoy-Ratelimited") != "true" || last429.header.Get("X-RateLimit-Limit") != "60, 60;w=3600" ||
		last429.header.Get("RateLimit-Policy") != `"global";q=60;w=3600` || last429.header.Get("Retry-After") == "" {
		t.Errorf("429: %+v", last429)
	}
	if r, err := get(gw+"/", "X-Client: c2"); err != nil || r.status != http.StatusOK {
		t.Errorf("another client: %v %v, want 200", r, err)
	}

	out := "http://" + c.addr("client-out")
	c.expectEventually("echo via the client's sidecar", 15*time.Second, out+"/", []string{"Host: echo", "X-Client: probe"}, servedBy("echo"))
	sidecarOK := 0
	for range 8 {
		r, err := get(out+"/", "Host: echo", "X-Client: s1")
		if err != nil {
			t.Fatal(err)
		}
		if r.status == http.StatusOK {
			sidecarOK++
		} else if r.status != http.StatusTooManyRequests {
			t.Fatalf("sidecar: %d %.200s", r.status, r.body)
		}
	}
	if sidecarOK != 5 && time.Now().Truncate(time.Hour) == hour {
		t.Errorf("sidecar: %d of 8 requests accepted, want 5 (echo's limit)", sidecarOK)
	}

	redis.kill()
	c.expectEventually("Allow gateway with Redis down", 10*time.Second, gw+"/", []string{"X-Client: c3"}, servedBy("echo"))
	var allowed, errs uint64
	for _, admin := range replicas {
		allowed += filterStat(t, admin, "ratelimit", "failure_mode_allowed")
		errs += filterStat(t, admin, "ratelimit", "error")
	}
	if allowed == 0 || errs == 0 {
		t.Errorf("failure_mode_allowed = %d, error = %d over edge's replicas after Redis went down, want both > 0", allowed, errs)
	}
	c.expectEventually("Deny gateway with Redis down", 10*time.Second, strict+"/", nil, func(r *response) error {
		if r.status != http.StatusInternalServerError {
			return fmt.Errorf("status %d, want 500", r.status)
		}
		return nil
	})
	if n := filterStat(t, c.addr("gateway-admin-strict"), "ratelimit", "error"); n == 0 {
		t.Errorf("error = 0 at strict after Redis went down")
	}
}

// requestsServed is the requests a proxy served so far: the sum of its
// meshgate_proxy_requests_total.
func requestsServed(t *testing.T, admin string) float64 {
	t.Helper()
	families, err := scrapeMetrics(admin, "", acceptText)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, m := range families["meshgate_proxy_requests_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	return total
}

// principalRateLimitPolicy: a local limit of 3 requests an hour per
// authenticated principal on the API-key route api and on the open route
// of apiKeyPolicy.
const principalRateLimitPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: per-consumer}
spec:
  targetRefs:
    - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
    - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: open}
  rateLimit:
    local:
      rules:
      - limit: {requests: 3, unit: Hour}
        key: {principal: {}}
`

// TestPrincipalRateLimit: a rate limit keyed by principal gives each API
// consumer its own bucket (acme's exhausted, globex still has its own),
// and requests without a principal (the open route) are not limited by it;
// meshgate top --by consumer shows acme's requests and 429s, meshgate get
// consumers the declared consumers.
func TestPrincipalRateLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("edge.yaml", yamlDocs(apiKeyPolicy(), principalRateLimitPolicy))
	c.startApp("app", "app", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	// The probe is globex's first request.
	eventually(t, 20*time.Second, "the gateway limits /api per consumer", func() error {
		r, err := get(gw+"/api/x", "X-API-Key: globex-key")
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || r.header.Get("RateLimit-Policy") == "" {
			return fmt.Errorf("status %d, headers %v", r.status, r.header)
		}
		return nil
	})
	statuses := func(path string, n int, headers ...string) []int {
		out := make([]int, n)
		for i := range out {
			r, err := get(gw+path, headers...)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			out[i] = r.status
		}
		return out
	}
	// acme's requests, inside an interval of meshgate top --by consumer (a
	// longer one if the machine was too slow for them: acme's bucket is
	// empty then, every request of the next try is a 429).
	var first, last []int
	send := func() {
		last = statuses("/api/x", 4, "X-API-Key: acme-key")
		if first == nil {
			first = last
		}
	}
	var view topView
	for interval := 3 * time.Second; ; interval *= 2 {
		v, ok := c.topWhile(interval, send, "--by", "consumer")
		if ok {
			view = v
			break
		}
		if interval > 20*time.Second {
			t.Fatalf("4 requests did not fit in a %s interval", interval)
		}
		t.Logf("the requests outlasted the %s interval; again with a longer one", interval)
	}
	if fmt.Sprint(first) != "[200 200 200 429]" {
		t.Errorf("acme: statuses %v, want 3 accepted then 429", first)
	}
	limited := 0
	for _, s := range last {
		if s == http.StatusTooManyRequests {
			limited++
		}
	}
	var acme *topRow
	for i, r := range view.Rows {
		if r.Kind == "apikey" && r.Consumer == "acme" {
			acme = &view.Rows[i]
		} else if r.Requests > 0 {
			t.Errorf("meshgate top --by consumer: row %+v, want only acme's requests in the interval", r)
		}
	}
	if view.By != "consumer" || acme == nil || acme.Requests != 4 || acme.RateLimited != float64(limited) || acme.RequestsPerSecond <= 0 {
		t.Errorf("meshgate top --by consumer: %+v, want acme with 4 requests, %d of them limited", view, limited)
	}
	if got := statuses("/api/x", 3, "X-API-Key: globex-key"); fmt.Sprint(got) != "[200 200 429]" {
		t.Errorf("globex after acme's: statuses %v, want its own bucket (2 left, then 429)", got)
	}
	if got := statuses("/", 6); fmt.Sprint(got) != "[200 200 200 200 200 200]" {
		t.Errorf("no principal: statuses %v, want none limited", got)
	}
	out, err := c.cli("get", "consumers", "-o", "json")
	if err != nil {
		t.Fatalf("meshgate get consumers: %v: %s", err, out)
	}
	var consumers struct {
		Items []struct{ Kind, Name, Namespace, Policy string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &consumers); err != nil {
		t.Fatalf("meshgate get consumers -o json: %v: %s", err, out)
	}
	names := map[string]bool{}
	for _, it := range consumers.Items {
		names[it.Kind+"/"+it.Name] = it.Namespace == "default" && it.Policy != ""
	}
	if !names["apikey/acme"] || !names["apikey/globex"] {
		t.Errorf("meshgate get consumers: %s, want acme and globex (apikey, with their policy)", out)
	}
}

// sidecarRateLimitPolicy: echo (a plain endpoint) with a global limit of 5
// requests an hour per X-Client and the failure mode mode, which the
// sidecars calling echo apply; the rate-limit service at ${rls}.
func sidecarRateLimitPolicy(mode string) string {
	return `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  rateLimitService: {address: "${rls}", timeout: 1s}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: echo}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${echo-1}"}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: echo-global}
spec:
  targetRefs: [{kind: Service, name: echo}]
  rateLimit:
    global:
      failureMode: ` + mode + `
      rules:
      - limit: {requests: 5, unit: Hour}
        key: {header: X-Client}
`
}

// TestGlobalRateLimitRedisDownAtSidecar: a global limit on a Service holds
// at the sidecar calling it (5 of 6 requests, counted in a real Redis);
// with Redis killed, the failure mode holds there: Allow lets the client
// that was over its limit through, Deny (the policy edited) answers 500,
// and the sidecar counts each failure (/stats ratelimit: error, and
// failure_mode_allowed for Allow).
func TestGlobalRateLimitRedisDownAtSidecar(t *testing.T) {
	t.Parallel()
	redis := startRedis(t)
	c := newCluster(t)
	rls := c.addr("rls")
	start(t, "ratelimit", "ratelimit", "--redis", redis.addr, "--listen", rls)
	c.policy("global.yaml", yamlDocs(sidecarRateLimitPolicy("Allow"), meshServices("client")))
	c.startControlPlane()
	c.app("echo-1", "echo", "v1", "")
	c.startInstance(c.sidecar, "client", "client", "v1")
	out := "http://" + c.addr("client-out")
	admin := c.addr("sidecar-admin-" + c.addr("client-in"))
	c.expectEventually("echo via the client's sidecar, limited", 15*time.Second, out+"/", []string{"Host: echo", "X-Client: probe"}, func(r *response) error {
		if err := servedBy("echo")(r); err != nil {
			return err
		}
		if r.header.Get("X-RateLimit-Limit") == "" {
			return fmt.Errorf("no X-RateLimit-Limit yet: %v", r.header)
		}
		return nil
	})
	hour := time.Now().Truncate(time.Hour)
	var got []int
	for range 6 {
		r, err := get(out+"/", "Host: echo", "X-Client: s1")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.status)
	}
	if fmt.Sprint(got) != "[200 200 200 200 200 429]" && time.Now().Truncate(time.Hour) == hour {
		t.Fatalf("sidecar: statuses %v, want 5 accepted then 429 (echo's limit)", got)
	}
	stat := func(key string) uint64 { return filterStat(t, admin, "ratelimit", key) }
	if e, a := stat("error"), stat("failure_mode_allowed"); e != 0 || a != 0 {
		t.Errorf("before Redis went down: error %d, failure_mode_allowed %d, want 0", e, a)
	}

	redis.kill()
	c.expectEventually("Allow at the sidecar with Redis down: s1, over its limit, let through", 15*time.Second,
		out+"/", []string{"Host: echo", "X-Client: s1"}, servedBy("echo"))
	errAllow, allowed := stat("error"), stat("failure_mode_allowed")
	if errAllow == 0 || allowed == 0 {
		t.Errorf("after Redis went down (Allow): error %d, failure_mode_allowed %d, want both > 0", errAllow, allowed)
	}

	c.policy("global.yaml", yamlDocs(sidecarRateLimitPolicy("Deny"), meshServices("client")))
	c.expectEventually("Deny at the sidecar with Redis down", 15*time.Second, out+"/", []string{"Host: echo", "X-Client: s2"}, func(r *response) error {
		if r.status != http.StatusInternalServerError {
			return fmt.Errorf("status %d, want 500", r.status)
		}
		return nil
	})
	// Until the sidecar had the Deny policy, the polls were allowed: count
	// from here.
	errDeny, allowed := stat("error"), stat("failure_mode_allowed")
	if r, err := get(out+"/", "Host: echo", "X-Client: s3"); err != nil || r.status != http.StatusInternalServerError {
		t.Errorf("Deny at the sidecar: %v %v, want 500", r, err)
	}
	if e, a := stat("error"), stat("failure_mode_allowed"); e != errDeny+1 || a != allowed {
		t.Errorf("a request denied: error %d (was %d), failure_mode_allowed %d (was %d): want error +1, allowed unchanged", e, errDeny, a, allowed)
	}
}
