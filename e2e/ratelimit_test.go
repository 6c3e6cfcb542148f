package e2e

import (
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
