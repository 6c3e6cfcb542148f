package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// healthCheckBodyLimit is how much of a health check response body is read.
const healthCheckBodyLimit = 4 << 10

// statusRange is an expected_statuses entry: [start, end).
type statusRange struct{ start, end int64 }

// healthChecker is a cluster's health_checks entry: it checks every
// endpoint each interval (plus up to interval_jitter), over HTTP (a GET of
// path, expecting one of expected_statuses, 200 by default) or TCP (a
// connection that opens), each check bounded by timeout. An endpoint fails
// its check after unhealthy_threshold consecutive failures and passes again
// after healthy_threshold consecutive successes; a new endpoint fails until
// its first check passes (Envoy: one success suffices at first).
type healthChecker struct {
	cluster            *Cluster
	interval, timeout  time.Duration
	jitter             time.Duration
	healthyThreshold   int64
	unhealthyThreshold int64
	// http is nil for a TCP check.
	http *httpCheck
	// kick asks for a check round now (new endpoints).
	kick chan struct{}
	// probe runs one check of an endpoint (check; tests replace it).
	probe func(ctx context.Context, address string) error
}

// healthCheckKey marks the context of a health check's request: its
// connection is not the traffic's, so the circuit breaker does not count it.
type healthCheckKey struct{}

type httpCheck struct {
	path, host string
	expected   []statusRange
}

// withHealthProbe replaces the health checks' probe (tests).
func withHealthProbe(probe func(ctx context.Context, address string) error) Option {
	return func(o *clusterOptions) { o.healthProbe = probe }
}

func newHealthChecker(c *Cluster, checks []*corev3.HealthCheck, probeOverride func(context.Context, string) error) (*healthChecker, error) {
	if len(checks) == 0 {
		return nil, nil
	}
	if len(checks) > 1 {
		return nil, errors.New("health_checks: one check is supported")
	}
	hc := checks[0]
	hcr := &healthChecker{
		cluster:            c,
		interval:           hc.GetInterval().AsDuration(),
		timeout:            hc.GetTimeout().AsDuration(),
		jitter:             hc.GetIntervalJitter().AsDuration(),
		healthyThreshold:   int64(hc.GetHealthyThreshold().GetValue()),
		unhealthyThreshold: int64(hc.GetUnhealthyThreshold().GetValue()),
		kick:               make(chan struct{}, 1),
	}
	if hcr.interval <= 0 || hcr.timeout <= 0 {
		return nil, errors.New("health_checks[0]: interval and timeout must be positive")
	}
	hcr.probe = hcr.check
	if probeOverride != nil {
		hcr.probe = probeOverride
	}
	hcr.healthyThreshold = max(hcr.healthyThreshold, 1)
	hcr.unhealthyThreshold = max(hcr.unhealthyThreshold, 1)
	switch {
	case hc.GetHttpHealthCheck() != nil:
		h := hc.GetHttpHealthCheck()
		hcr.http = &httpCheck{path: h.GetPath(), host: h.GetHost()}
		if hcr.http.host == "" {
			hcr.http.host = c.name // Envoy's default: the cluster's name
		}
		for i, r := range h.GetExpectedStatuses() {
			if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
				return nil, fmt.Errorf("health_checks[0].http_health_check.expected_statuses[%d]: [%d, %d) is not a range of statuses in [100, 600)", i, r.GetStart(), r.GetEnd())
			}
			hcr.http.expected = append(hcr.http.expected, statusRange{r.GetStart(), r.GetEnd()})
		}
		if len(hcr.http.expected) == 0 {
			hcr.http.expected = []statusRange{{200, 201}}
		}
	case hc.GetTcpHealthCheck() != nil:
	default:
		return nil, errors.New("health_checks[0]: http_health_check or tcp_health_check is required")
	}
	return hcr, nil
}

// run checks the endpoints at once, then every interval (plus jitter), and
// when endpoints are added, until ctx ends.
func (hc *healthChecker) run(ctx context.Context) {
	for {
		hc.round(ctx)
		wait := hc.interval
		if hc.jitter > 0 {
			wait += rand.N(hc.jitter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-hc.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// round checks every endpoint of the current set concurrently.
func (hc *healthChecker) round(ctx context.Context) {
	set := hc.cluster.endpoints.Load()
	var wg sync.WaitGroup
	for _, h := range set.hosts {
		wg.Go(func() {
			err := hc.probe(ctx, h.address)
			if ctx.Err() == nil {
				hc.result(h, err)
			}
		})
	}
	wg.Wait()
}

// result applies one check's outcome to h.
func (hc *healthChecker) result(h *host, err error) {
	h.lastCheck.Store(time.Now().UnixNano())
	first := !h.checked.Swap(true)
	if err == nil {
		h.checkFailures.Store(0)
		n := h.checkSuccesses.Add(1)
		if h.checkFailed.Load() && (first || n >= hc.healthyThreshold) {
			h.checkFailed.Store(false)
			hc.cluster.refreshAvailable()
			hc.cluster.logger.Info("endpoint passes its health check", "endpoint", h.address)
		}
		return
	}
	h.checkSuccesses.Store(0)
	n := h.checkFailures.Add(1)
	hc.cluster.stats.HealthCheckFailures.Inc()
	if !h.checkFailed.Load() && n >= hc.unhealthyThreshold {
		h.checkFailed.Store(true)
		hc.cluster.refreshAvailable()
		hc.cluster.logger.Warn("endpoint fails its health check", "endpoint", h.address, "error", err)
	}
}

// check runs one check of the endpoint at address.
func (hc *healthChecker) check(ctx context.Context, address string) error {
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, healthCheckKey{}, true), hc.timeout)
	defer cancel()
	if hc.http == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+hc.http.path, nil)
	if err != nil {
		return err
	}
	req.Host = hc.http.host
	req.Header.Set("User-Agent", "meshgate-health-check")
	req.Close = true // a check's connection is not pooled with the traffic's
	resp, err := hc.cluster.router.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.CopyN(io.Discard, resp.Body, healthCheckBodyLimit)
	_ = resp.Body.Close()
	for _, r := range hc.http.expected {
		if int64(resp.StatusCode) >= r.start && int64(resp.StatusCode) < r.end {
			return nil
		}
	}
	return fmt.Errorf("status %d not expected", resp.StatusCode)
}
