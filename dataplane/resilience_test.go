package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpproxy"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// namedBackend is a real backend listener answering its name (or what
// handle says), that the test can stop.
type namedBackend struct {
	name string
	srv  *httptest.Server
	addr string
}

func startNamedBackend(t *testing.T, name string, handle func(w http.ResponseWriter, r *http.Request) bool) *namedBackend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handle != nil && handle(w, r) {
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return &namedBackend{name: name, srv: srv, addr: srv.Listener.Addr().String()}
}

// resilientConfig is one listener routing / to cluster "orders" of the
// backends, with the cluster and route changed by the mutators.
func resilientConfig(t *testing.T, backends []*namedBackend, cluster func(*clusterv3.Cluster), route func(*routev3.RouteAction)) config {
	return config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "orders", backend: backends[0].addr,
		mutate: func(s *snapshot) {
			var lbs []*endpointv3.LbEndpoint
			for _, b := range backends {
				lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
					Endpoint: &endpointv3.Endpoint{Address: socketAddress(t, b.addr)}}})
			}
			s.endpoints[0].Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
			if cluster != nil {
				cluster(s.clusters[0])
			}
			if route != nil {
				route(s.routes[0].VirtualHosts[0].Routes[0].GetRoute())
			}
		}}
}

// retryOnFailure is a route retry policy: two retries on 5xx, connect
// failure and reset, each on an endpoint the request has not tried.
func retryOnFailure(t *testing.T) func(*routev3.RouteAction) {
	predicate, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		t.Fatal(err)
	}
	return func(ra *routev3.RouteAction) {
		ra.RetryPolicy = &routev3.RetryPolicy{
			RetryOn: "5xx,connect-failure,reset", NumRetries: wrapperspb.UInt32(2),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)},
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
				Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: predicate}}},
			HostSelectionRetryMaxAttempts: 3,
		}
	}
}

// endpointOf returns the /clusters state of the endpoint at addr.
func endpointOf(p *Proxy, cluster, addr string) (upstream.EndpointStatus, bool) {
	for _, c := range p.Clusters().Clusters {
		if c.Name != cluster {
			continue
		}
		for _, e := range c.Endpoints {
			if e.Address == addr {
				return e, true
			}
		}
	}
	return upstream.EndpointStatus{}, false
}

// TestProxyEjectsKilledBackendUnderLoad: under a steady client, one of
// three backends is killed; with retries and outlier detection (consecutive
// gateway failures), no request fails and the dead backend is ejected.
func TestProxyEjectsKilledBackendUnderLoad(t *testing.T) {
	t.Parallel()
	backends := []*namedBackend{startNamedBackend(t, "a", nil), startNamedBackend(t, "b", nil), startNamedBackend(t, "c", nil)}
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, resilientConfig(t, backends, func(c *clusterv3.Cluster) {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			ConsecutiveGatewayFailure: wrapperspb.UInt32(3), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
			Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Minute),
			MaxEjectionPercent: wrapperspb.UInt32(34),
		}
	}, retryOnFailure(t)).build(t))
	client := &http.Client{Timeout: 10 * time.Second}
	url := waitServing(t, p, client, "a")

	var sent, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				code, body, err := get(client, url)
				sent.Add(1)
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d %q %v", code, body, err))
					mu.Unlock()
				}
			}
		})
	}
	eventually(t, "100 requests before the kill", func() bool { return sent.Load() >= 100 })
	backends[1].srv.CloseClientConnections()
	backends[1].srv.Close()
	killedAt := sent.Load()
	eventually(t, "the killed backend ejected", func() bool {
		e, _ := endpointOf(p, "orders", backends[1].addr)
		return e.Ejected
	})
	eventually(t, "300 requests after the kill", func() bool { return sent.Load() >= killedAt+300 })
	stop()
	wg.Wait()
	t.Logf("%d requests, %d failed; ejected after the kill", sent.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed with retries and outlier detection: %v", failed.Load(), sent.Load(), failures)
	}
	e, _ := endpointOf(p, "orders", backends[1].addr)
	if e.TimesEjected != 1 || e.EjectedUntil == nil || e.Available {
		t.Errorf("killed backend: %+v", e)
	}
}

// TestProxyEjectsBackendFailingHalfItsRequests: a backend that answers 500
// to every other request is ejected by failure percentage; the others stay.
func TestProxyEjectsBackendFailingHalfItsRequests(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	flaky := startNamedBackend(t, "c", func(w http.ResponseWriter, _ *http.Request) bool {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return true
		}
		return false
	})
	backends := []*namedBackend{startNamedBackend(t, "a", nil), startNamedBackend(t, "b", nil), flaky}
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, resilientConfig(t, backends, func(c *clusterv3.Cluster) {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(0), EnforcingSuccessRate: wrapperspb.UInt32(0),
			EnforcingFailurePercentage: wrapperspb.UInt32(100), FailurePercentageThreshold: wrapperspb.UInt32(40),
			FailurePercentageMinimumHosts: wrapperspb.UInt32(3), FailurePercentageRequestVolume: wrapperspb.UInt32(2),
			Interval: durationpb.New(200 * time.Millisecond), BaseEjectionTime: durationpb.New(time.Minute),
		}
	}, nil).build(t))
	client := &http.Client{Timeout: 10 * time.Second}
	url := waitServing(t, p, client, "a")
	eventually(t, "the flaky backend ejected", func() bool {
		for range 12 {
			_, _, _ = get(client, url)
		}
		e, _ := endpointOf(p, "orders", flaky.addr)
		return e.Ejected
	})
	for _, b := range backends[:2] {
		if e, _ := endpointOf(p, "orders", b.addr); e.Ejected {
			t.Errorf("healthy backend %s ejected: %+v", b.name, e)
		}
	}
	for range 30 {
		if code, body, err := get(client, url); err != nil || code != 200 || body == "c" {
			t.Fatalf("after the ejection: %d %q %v", code, body, err)
		}
	}
}

// TestProxyActiveHealthCheckMarksHangingBackend: a backend passing its
// health check starts hanging: it fails its active check (timeout) and
// gets no traffic; the others keep passing.
func TestProxyActiveHealthCheckMarksHangingBackend(t *testing.T) {
	t.Parallel()
	var checks atomic.Int64
	var hang atomic.Bool
	hanging := startNamedBackend(t, "h", func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/healthz" {
			return false
		}
		checks.Add(1)
		if hang.Load() {
			<-r.Context().Done() // hangs until the check gives up
		}
		return true
	})
	backends := []*namedBackend{startNamedBackend(t, "a", nil), startNamedBackend(t, "b", nil), hanging}
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, resilientConfig(t, backends, func(c *clusterv3.Cluster) {
		c.HealthChecks = []*corev3.HealthCheck{{
			Timeout: durationpb.New(200 * time.Millisecond), Interval: durationpb.New(300 * time.Millisecond),
			UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
				Path: "/healthz", ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}}}},
		}}
	}, nil).build(t))
	client := &http.Client{Timeout: 10 * time.Second}
	url := waitServing(t, p, client, "a")
	eventually(t, "every backend passing its check", func() bool {
		for _, b := range backends {
			if e, _ := endpointOf(p, "orders", b.addr); e.ActiveCheck != upstream.CheckPassing {
				return false
			}
		}
		return true
	})
	hang.Store(true)
	before := checks.Load()
	eventually(t, "the hanging backend failing its check, the others passing", func() bool {
		h, _ := endpointOf(p, "orders", hanging.addr)
		a, _ := endpointOf(p, "orders", backends[0].addr)
		b, _ := endpointOf(p, "orders", backends[1].addr)
		return checks.Load() > before && h.ActiveCheck == upstream.CheckFailing && a.ActiveCheck == upstream.CheckPassing && b.ActiveCheck == upstream.CheckPassing
	})
	for range 30 {
		if code, body, err := get(client, url); err != nil || code != 200 || body == "h" {
			t.Fatalf("with the hanging backend failing: %d %q %v", code, body, err)
		}
	}
	// The admin's /clusters shows it.
	_, body, err := get(client, "http://"+p.AdminAddr()+"/clusters")
	if err != nil {
		t.Fatal(err)
	}
	var dump ClustersDump
	if err := json.Unmarshal([]byte(body), &dump); err != nil || len(dump.Clusters) != 1 || !dump.Clusters[0].HealthChecks {
		t.Fatalf("/clusters = %v, %s", err, body)
	}
	if !strings.Contains(body, `"active_check": "failing"`) {
		t.Errorf("/clusters does not show the failing check: %s", body)
	}
}

// TestProxyCircuitBreakerBurst: with max_requests 4 and four requests held
// by the backend, a burst gets immediate 503s naming the limit (none
// waits for the held ones); once they end, the proxy serves again.
func TestProxyCircuitBreakerBurst(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var held atomic.Int64
	slow := startNamedBackend(t, "a", func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/hold" {
			held.Add(1)
			<-gate
		}
		return false
	})
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	var openGate sync.Once
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) }) // first, even on failure: the proxy and backend stop then
	cp.set(t, resilientConfig(t, []*namedBackend{slow}, func(c *clusterv3.Cluster) {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxRequests: wrapperspb.UInt32(4)}}}
	}, nil).build(t))
	client := &http.Client{Timeout: 30 * time.Second}
	url := waitServing(t, p, client, "a")
	base := strings.TrimSuffix(url, "/hello")

	var holders sync.WaitGroup
	holdCodes := make(chan int, 4)
	for range 4 {
		holders.Go(func() {
			code, _, _ := get(client, base+"/hold")
			holdCodes <- code
		})
	}
	eventually(t, "four requests held by the backend", func() bool { return held.Load() == 4 })
	for i := range 20 {
		resp, err := client.Get(base + "/burst")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(httpproxy.OverloadedHeader) != upstream.LimitRequests {
			t.Fatalf("burst request %d: %d %s=%q, want 503 max_requests", i, resp.StatusCode, httpproxy.OverloadedHeader, resp.Header.Get(httpproxy.OverloadedHeader))
		}
	}
	openGate.Do(func() { close(gate) })
	holders.Wait()
	close(holdCodes)
	for code := range holdCodes {
		if code != http.StatusOK {
			t.Errorf("held request: %d", code)
		}
	}
	for range 10 {
		if code, body, err := get(client, url); err != nil || code != 200 || body != "a" {
			t.Fatalf("after the burst: %d %q %v", code, body, err)
		}
	}
	cs := p.Clusters().Clusters[0].CircuitBreakers
	if cs == nil || cs.Overflows[upstream.LimitRequests] != 20 || cs.Requests != 0 {
		t.Errorf("circuit breaker state %+v, want 20 max_requests overflows and no active request", cs)
	}
}
