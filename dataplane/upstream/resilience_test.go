package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// threeEndpoints are the endpoints of the clusters below.
var threeEndpoints = []testEndpoint{{addr: "10.0.0.1", port: 80}, {addr: "10.0.0.2", port: 80}, {addr: "10.0.0.3", port: 80}}

// newWatched builds a STATIC cluster of eps configured by mutate, closed
// when the test (or its synctest bubble) ends.
func newWatched(t *testing.T, mutate func(*clusterv3.Cluster), eps ...testEndpoint) *Cluster {
	t.Helper()
	c := staticCluster("orders", eps...)
	mutate(c)
	cl, err := NewCluster(c, nil)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func status(code int) *http.Response { return &http.Response{StatusCode: code} }

// record gives n outcomes of requests to address to the outlier detector.
func record(c *Cluster, address string, n int, resp *http.Response, err error) {
	h := c.endpoints.Load().byAddress[address]
	for range n {
		c.outlier.record(context.Background(), h, resp, err)
	}
}

func endpointState(t *testing.T, c *Cluster, address string) EndpointStatus {
	t.Helper()
	for _, e := range c.Status().Endpoints {
		if e.Address == address {
			return e
		}
	}
	t.Fatalf("no endpoint %s in %+v", address, c.Status())
	return EndpointStatus{}
}

// TestNotConfiguredCostsNothing: a cluster without circuit breakers,
// outlier detection or health checks has no breaker, runs no goroutine and
// picks endpoints without looking at their state.
func TestNotConfiguredCostsNothing(t *testing.T) {
	c := mustCluster(t, staticCluster("plain", threeEndpoints...))
	if c.Breaker() != nil || c.outlier != nil || c.health != nil || c.watched || c.stop != nil {
		t.Fatalf("unconfigured cluster: breaker %v outlier %v health %v watched %v", c.Breaker(), c.outlier, c.health, c.watched)
	}
	if c.endpoints.Load().scheduleHosts != nil {
		t.Fatal("unconfigured cluster has a watched schedule")
	}
	if n := testing.AllocsPerRun(100, func() { c.Next() }); n != 0 {
		t.Errorf("Next allocates %v", n)
	}
}

func outlier(mutate func(*clusterv3.OutlierDetection)) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		od := &clusterv3.OutlierDetection{
			Interval: durationpb.New(10 * time.Second), BaseEjectionTime: durationpb.New(30 * time.Second),
			MaxEjectionPercent: wrapperspb.UInt32(50),
		}
		if mutate != nil {
			mutate(od)
		}
		c.OutlierDetection = od
	}
}

// TestConsecutive5xxEjection: the consecutive_5xx-th failure in a row
// ejects the endpoint at once; it gets no traffic until the first interval
// after base_ejection_time, and a second ejection lasts twice as long
// (capped by max_ejection_time). A success resets the count.
func TestConsecutive5xxEjection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.Consecutive_5Xx = wrapperspb.UInt32(3)
			od.MaxEjectionTime = durationpb.New(50 * time.Second)
		}), threeEndpoints...)
		const bad = "10.0.0.2:80"
		record(c, bad, 2, status(500), nil)
		record(c, bad, 1, status(200), nil)
		record(c, bad, 2, status(500), nil)
		if endpointState(t, c, bad).Ejected {
			t.Fatal("ejected after 2+2 failures split by a success, want consecutive 3")
		}
		record(c, bad, 1, status(503), nil)
		if e := endpointState(t, c, bad); !e.Ejected || e.TimesEjected != 1 {
			t.Fatalf("after 3 consecutive 5xx: %+v, want ejected once", e)
		}
		if n := picks(t, c, 300)[bad]; n != 0 {
			t.Fatalf("ejected endpoint picked %d times", n)
		}
		// Back at the first interval at or after 30s.
		time.Sleep(25 * time.Second)
		synctest.Wait()
		if !endpointState(t, c, bad).Ejected {
			t.Fatal("back before base_ejection_time")
		}
		time.Sleep(10 * time.Second) // the 30s tick
		synctest.Wait()
		if endpointState(t, c, bad).Ejected {
			t.Fatal("still ejected after base_ejection_time")
		}
		if n := picks(t, c, 300)[bad]; n != 100 {
			t.Fatalf("endpoint back from ejection picked %d of 300 times, want 100", n)
		}
		// Ejected again at once: 2 x 30s = 60s, capped at 50s.
		record(c, bad, 3, nil, errors.New("connection reset"))
		e := endpointState(t, c, bad)
		if !e.Ejected || e.TimesEjected != 2 {
			t.Fatalf("second ejection: %+v", e)
		}
		if got := time.Until(*e.EjectedUntil); got != 50*time.Second {
			t.Errorf("second ejection lasts %v, want max_ejection_time 50s", got)
		}
	})
}

// TestGatewayFailureEjection: consecutive_gateway_failure counts 502, 503,
// 504 and failures to get a response; a 500 breaks the run. Its enforcing
// percentage defaults to 0 (Envoy's): nothing is ejected until it is set.
func TestGatewayFailureEjection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		notEnforced := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.ConsecutiveGatewayFailure = wrapperspb.UInt32(2)
			od.Consecutive_5Xx = wrapperspb.UInt32(100)
		}), threeEndpoints...)
		record(notEnforced, "10.0.0.1:80", 5, status(502), nil)
		if endpointState(t, notEnforced, "10.0.0.1:80").Ejected {
			t.Fatal("ejected for gateway failures with enforcing_consecutive_gateway_failure unset (0)")
		}
		enforced := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.ConsecutiveGatewayFailure = wrapperspb.UInt32(2)
			od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
			od.Consecutive_5Xx = wrapperspb.UInt32(100)
		}), threeEndpoints...)
		record(enforced, "10.0.0.1:80", 1, status(504), nil)
		record(enforced, "10.0.0.1:80", 1, status(500), nil)
		record(enforced, "10.0.0.1:80", 1, status(503), nil)
		if endpointState(t, enforced, "10.0.0.1:80").Ejected {
			t.Fatal("a 500 between gateway failures did not break the run")
		}
		record(enforced, "10.0.0.1:80", 1, nil, errors.New("dial tcp: connection refused"))
		if !endpointState(t, enforced, "10.0.0.1:80").Ejected {
			t.Fatal("not ejected after 503 + connect failure")
		}
		// A request the client abandoned, or a circuit breaker refusal, is
		// not the endpoint's failure.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		h := enforced.endpoints.Load().byAddress["10.0.0.2:80"]
		for range 5 {
			enforced.outlier.record(ctx, h, nil, context.Canceled)
			enforced.outlier.record(context.Background(), h, nil, &OverflowError{Limit: LimitConnections})
		}
		if h.consecutiveGW.Load() != 0 {
			t.Fatalf("abandoned and refused requests counted as gateway failures: %d", h.consecutiveGW.Load())
		}
	})
}

// TestMaxEjectionPercent: ejections stop at max_ejection_percent of the
// endpoints, but one endpoint may always be ejected.
func TestMaxEjectionPercent(t *testing.T) {
	t.Parallel()
	four := append(append([]testEndpoint(nil), threeEndpoints...), testEndpoint{addr: "10.0.0.4", port: 80})
	for _, tc := range []struct {
		percent uint32
		want    int
	}{{0, 1}, {25, 1}, {50, 2}, {100, 4}} {
		synctest.Test(t, func(t *testing.T) {
			c := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
				od.Consecutive_5Xx = wrapperspb.UInt32(1)
				od.MaxEjectionPercent = wrapperspb.UInt32(tc.percent)
			}), four...)
			for _, e := range four {
				record(c, e.addr+":80", 1, status(500), nil)
			}
			ejected := 0
			for _, e := range c.Status().Endpoints {
				if e.Ejected {
					ejected++
				}
			}
			if ejected != tc.want {
				t.Errorf("max_ejection_percent %d: %d of 4 ejected, want %d", tc.percent, ejected, tc.want)
			}
		})
	}
}

// TestPanicMode: when fewer than half the endpoints are available, the
// cluster routes to all of them rather than failing every request.
func TestPanicMode(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.Consecutive_5Xx = wrapperspb.UInt32(1)
			od.MaxEjectionPercent = wrapperspb.UInt32(100)
		}), threeEndpoints...)
		record(c, "10.0.0.1:80", 1, status(500), nil)
		if got := picks(t, c, 300); got["10.0.0.1:80"] != 0 || got["10.0.0.2:80"] != 150 {
			t.Fatalf("one of three ejected: picks %v", got)
		}
		record(c, "10.0.0.2:80", 1, status(500), nil)
		if !c.Status().Panic {
			t.Fatal("two of three ejected: not in panic mode")
		}
		if got := picks(t, c, 300); got["10.0.0.1:80"] != 100 || got["10.0.0.2:80"] != 100 {
			t.Fatalf("panic mode: picks %v, want every endpoint", got)
		}
	})
}

// TestSuccessRateEjection: at each interval, among the endpoints with
// success_rate_request_volume requests (at least
// success_rate_minimum_hosts of them), one whose success rate is below
// mean - stdev x success_rate_stdev_factor/1000 is ejected; the counts
// start anew at each interval.
func TestSuccessRateEjection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.Consecutive_5Xx = wrapperspb.UInt32(0)
			od.SuccessRateMinimumHosts = wrapperspb.UInt32(3)
			od.SuccessRateRequestVolume = wrapperspb.UInt32(20)
			od.SuccessRateStdevFactor = wrapperspb.UInt32(1000)
		}), threeEndpoints...)
		const flaky = "10.0.0.3:80"
		for range 10 {
			record(c, "10.0.0.1:80", 2, status(200), nil)
			record(c, "10.0.0.2:80", 2, status(200), nil)
			record(c, flaky, 1, status(200), nil)
			record(c, flaky, 1, status(500), nil)
		}
		if endpointState(t, c, flaky).Ejected {
			t.Fatal("success rate ejected before the interval")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !endpointState(t, c, flaky).Ejected || endpointState(t, c, "10.0.0.1:80").Ejected {
			t.Fatalf("after the interval: %+v", c.Status().Endpoints)
		}
	})
}

// TestFailurePercentageEjection: with enforcing_failure_percentage, an
// endpoint whose failures reach failure_percentage_threshold percent of
// its requests is ejected at the interval; below the request volume, not.
func TestFailurePercentageEjection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := newWatched(t, outlier(func(od *clusterv3.OutlierDetection) {
			od.Consecutive_5Xx = wrapperspb.UInt32(0)
			od.EnforcingSuccessRate = wrapperspb.UInt32(0)
			od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
			od.FailurePercentageThreshold = wrapperspb.UInt32(40)
			od.FailurePercentageMinimumHosts = wrapperspb.UInt32(3)
			od.FailurePercentageRequestVolume = wrapperspb.UInt32(10)
		}), threeEndpoints...)
		for range 10 {
			record(c, "10.0.0.1:80", 1, status(200), nil)
			record(c, "10.0.0.2:80", 1, status(200), nil)
			record(c, "10.0.0.3:80", 1, status(200), nil)
			record(c, "10.0.0.3:80", 1, status(500), nil)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !endpointState(t, c, "10.0.0.3:80").Ejected || endpointState(t, c, "10.0.0.1:80").Ejected {
			t.Fatalf("after the interval: %+v", c.Status().Endpoints)
		}
	})
}

func healthChecked(mutate func(*corev3.HealthCheck)) func(*clusterv3.Cluster) {
	return func(c *clusterv3.Cluster) {
		hc := &corev3.HealthCheck{
			Timeout: durationpb.New(time.Second), Interval: durationpb.New(5 * time.Second),
			UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
				Path: "/healthz", ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}}}},
		}
		if mutate != nil {
			mutate(hc)
		}
		c.HealthChecks = []*corev3.HealthCheck{hc}
	}
}

// TestActiveHealthCheck: endpoints are checked at once and every interval;
// an endpoint is pending (no traffic) until its first check passes, fails
// after unhealthy_threshold failures in a row, and passes again after
// healthy_threshold successes in a row.
func TestActiveHealthCheck(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := staticCluster("orders", threeEndpoints...)
		healthChecked(nil)(c)
		var mu sync.Mutex
		down := map[string]bool{}
		checks := map[string]int{}
		cl, err := NewCluster(c, nil, withHealthProbe(func(_ context.Context, address string) error {
			mu.Lock()
			defer mu.Unlock()
			checks[address]++
			if down[address] {
				return errors.New("down")
			}
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		synctest.Wait() // the first round, at once
		for _, e := range cl.Status().Endpoints {
			if e.ActiveCheck != CheckPassing {
				t.Fatalf("after a passing round: %+v", e)
			}
		}
		const bad = "10.0.0.3:80"
		mu.Lock()
		down[bad] = true
		mu.Unlock()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if e := endpointState(t, cl, bad); e.ActiveCheck != CheckPassing || !e.Available {
			t.Fatalf("one failure of unhealthy_threshold 2: %+v", e)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if e := endpointState(t, cl, bad); e.ActiveCheck != CheckFailing || e.Available {
			t.Fatalf("two failures: %+v", e)
		}
		if n := picks(t, cl, 300)[bad]; n != 0 {
			t.Fatalf("failing endpoint picked %d times", n)
		}
		mu.Lock()
		down[bad] = false
		mu.Unlock()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if e := endpointState(t, cl, bad); e.ActiveCheck != CheckFailing {
			t.Fatalf("one success of healthy_threshold 2: %+v", e)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if e := endpointState(t, cl, bad); e.ActiveCheck != CheckPassing || !e.Available {
			t.Fatalf("two successes: %+v", e)
		}
		mu.Lock()
		defer mu.Unlock()
		if checks[bad] != 5 {
			t.Errorf("%d checks of %s in 4 intervals, want 5 (one at once)", checks[bad], bad)
		}
	})
}

// TestHealthCheckNewEndpointPending: an endpoint added by discovery gets
// no traffic until its first check passes, and is checked at once, not
// at the next interval.
func TestHealthCheckNewEndpointPending(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := edsCluster("orders")
		healthChecked(func(hc *corev3.HealthCheck) { hc.Interval = durationpb.New(time.Hour) })(c)
		const added = "10.0.0.3:80"
		release := make(chan struct{})
		cl, err := NewCluster(c, nil, withHealthProbe(func(ctx context.Context, address string) error {
			if address != added {
				return nil
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.SetEndpoints(cla("orders", threeEndpoints[:2]...)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := cl.SetEndpoints(cla("orders", threeEndpoints...)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the round for the new endpoint waits on release
		if e := endpointState(t, cl, added); e.ActiveCheck != CheckPending || e.Available {
			t.Fatalf("new endpoint before its first check: %+v", e)
		}
		if n := picks(t, cl, 300)[added]; n != 0 {
			t.Fatalf("pending endpoint picked %d times", n)
		}
		close(release)
		synctest.Wait()
		if e := endpointState(t, cl, added); e.ActiveCheck != CheckPassing || !e.Available {
			t.Fatalf("new endpoint after its first check (no wait for the hour interval): %+v", e)
		}
	})
}

// TestHTTPHealthCheckRequest: the HTTP check GETs path with Host (the
// cluster name by default) and expects expected_statuses.
func TestHTTPHealthCheckRequest(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gotHost, gotPath string
	srv := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotHost, gotPath = r.Host, r.URL.Path
		mu.Unlock()
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	addr, port := splitAddr(t, srv)
	for _, tc := range []struct {
		path, host string
		expected   []*typev3.Int64Range
		wantErr    bool
	}{
		{path: "/healthz", host: "", wantErr: false},
		{path: "/teapot", host: "orders.internal", wantErr: true},
		{path: "/teapot", host: "orders.internal", expected: []*typev3.Int64Range{{Start: 418, End: 419}}, wantErr: false},
	} {
		c := newWatched(t, healthChecked(func(hc *corev3.HealthCheck) {
			hc.Interval = durationpb.New(time.Hour)
			h := hc.GetHttpHealthCheck()
			h.Path, h.Host, h.ExpectedStatuses = tc.path, tc.host, tc.expected
		}), testEndpoint{addr: addr, port: port})
		err := c.health.check(context.Background(), srv)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: check = %v, want error %v", tc.path, err, tc.wantErr)
		}
		wantHost := tc.host
		if wantHost == "" {
			wantHost = "orders"
		}
		mu.Lock()
		if gotHost != wantHost || gotPath != tc.path {
			t.Errorf("check sent Host %q path %q, want %q %q", gotHost, gotPath, wantHost, tc.path)
		}
		mu.Unlock()
	}
	// TCP: connect only.
	c := newWatched(t, healthChecked(func(hc *corev3.HealthCheck) {
		hc.Interval = durationpb.New(time.Hour)
		hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}), testEndpoint{addr: addr, port: port})
	if err := c.health.check(context.Background(), srv); err != nil {
		t.Errorf("tcp check of a listening endpoint: %v", err)
	}
}

func breakerCluster(t *testing.T, th *clusterv3.CircuitBreakers_Thresholds) *Cluster {
	return newWatched(t, func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}, threeEndpoints...)
}

// TestBreakerLimits: each limit admits up to its value and refuses the next
// with an OverflowError naming it, counted; ending frees a slot. Unset
// fields of a thresholds entry take Envoy's defaults.
func TestBreakerLimits(t *testing.T) {
	t.Parallel()
	c := breakerCluster(t, &clusterv3.CircuitBreakers_Thresholds{
		MaxRequests: wrapperspb.UInt32(2), MaxRetries: wrapperspb.UInt32(1),
		MaxConnections: wrapperspb.UInt32(2), MaxPendingRequests: wrapperspb.UInt32(1),
	})
	b := c.Breaker()
	for i := range 2 {
		if err := b.StartRequest(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := b.StartRequest()
	if o, ok := IsOverflow(err); !ok || o.Limit != LimitRequests {
		t.Fatalf("third request: %v, want max_requests overflow", err)
	}
	b.EndRequest()
	if err := b.StartRequest(); err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	if err := b.StartRetry(); err != nil {
		t.Fatal(err)
	}
	if o, ok := IsOverflow(b.StartRetry()); !ok || o.Limit != LimitRetries {
		t.Fatal("second retry admitted over max_retries 1")
	}
	// Connections: one pending at a time, two open at most.
	if err := b.startConnection(); err != nil {
		t.Fatal(err)
	}
	if o, ok := IsOverflow(b.startConnection()); !ok || o.Limit != LimitPendingRequests {
		t.Fatal("second concurrent dial admitted over max_pending_requests 1")
	}
	b.connectionDialed(true)
	if err := b.startConnection(); err != nil {
		t.Fatal(err)
	}
	b.connectionDialed(true)
	if o, ok := IsOverflow(b.startConnection()); !ok || o.Limit != LimitConnections {
		t.Fatal("third connection admitted over max_connections 2")
	}
	b.connectionClosed()
	if err := b.startConnection(); err != nil {
		t.Fatalf("after a close: %v", err)
	}
	s := b.Status()
	if s.Overflows[LimitRequests] != 1 || s.Overflows[LimitRetries] != 1 || s.Overflows[LimitConnections] != 1 || s.Overflows[LimitPendingRequests] != 1 {
		t.Errorf("overflows %v", s.Overflows)
	}

	defaults := breakerCluster(t, &clusterv3.CircuitBreakers_Thresholds{}).Breaker().Status()
	if defaults.MaxConnections != 1024 || defaults.MaxPendingRequests != 1024 || defaults.MaxRequests != 1024 || defaults.MaxRetries != 3 {
		t.Errorf("defaults %+v, want Envoy's 1024/1024/1024/3", defaults)
	}
}

// TestRetryBudget: with a retry budget, active retries may reach
// budget_percent of the active requests, and at least
// min_retry_concurrency; max_retries no longer applies.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	b := breakerCluster(t, &clusterv3.CircuitBreakers_Thresholds{
		MaxRetries: wrapperspb.UInt32(1),
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(2)},
	}).Breaker()
	admitted := func() int {
		n := 0
		for b.StartRetry() == nil {
			n++
		}
		for range n {
			b.EndRetry()
		}
		return n
	}
	if n := admitted(); n != 2 {
		t.Fatalf("no active request: %d retries admitted, want min_retry_concurrency 2", n)
	}
	for range 20 {
		if err := b.StartRequest(); err != nil {
			t.Fatal(err)
		}
	}
	if n := admitted(); n != 5 {
		t.Fatalf("20 active requests: %d retries admitted, want 25%% = 5", n)
	}
}

// newTestServer starts an HTTP server for the test and returns its address.
func newTestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestBalancersSkipUnavailableEndpoints: with outlier detection, every
// lb_policy picks among the available endpoints; a ring hash key whose
// endpoint is ejected moves to the next endpoint on the ring, and the other
// keys stay where they were.
func TestBalancersSkipUnavailableEndpoints(t *testing.T) {
	t.Parallel()
	four := append(append([]testEndpoint(nil), threeEndpoints...), testEndpoint{addr: "10.0.0.4", port: 80})
	const ejected = "10.0.0.2:80"
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_LEAST_REQUEST,
		clusterv3.Cluster_RANDOM, clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c := newWatched(t, func(c *clusterv3.Cluster) {
					c.LbPolicy = policy
					outlier(func(od *clusterv3.OutlierDetection) { od.Consecutive_5Xx = wrapperspb.UInt32(1) })(c)
				}, four...)
				before := make(map[uint64]string, 1000)
				for key := range uint64(1000) {
					before[key], _ = c.NextFor(HashKey(fmt.Sprint(key)))
				}
				record(c, ejected, 1, status(500), nil)
				if !endpointState(t, c, ejected).Ejected {
					t.Fatal("not ejected")
				}
				moved := 0
				for key := range uint64(1000) {
					got, ok := c.NextFor(HashKey(fmt.Sprint(key)))
					if !ok || got == ejected {
						t.Fatalf("key %d picked %q with %s ejected", key, got, ejected)
					}
					if got != before[key] {
						moved++
					}
					if n, _ := c.Next(); n == ejected {
						t.Fatalf("Next picked the ejected endpoint")
					}
				}
				hashing := policy == clusterv3.Cluster_RING_HASH || policy == clusterv3.Cluster_MAGLEV
				if hashing && (moved == 0 || moved > 400) {
					t.Errorf("%d of 1000 keys moved when one of four endpoints was ejected, want about 250", moved)
				}
			})
		})
	}
}
