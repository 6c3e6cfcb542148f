package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// wlResilience is the section of the cost of a TrafficPolicy with retries
// and outlier detection.
const wlResilience = "(g) resilience cost: meshgate gateway, tiny body, max rate (wrk), retries + outlier detection vs no TrafficPolicy, one gateway, same run"

// resiliencePolicyFile is the TrafficPolicy of the resilience row, in the
// data-plane policy directory while it runs.
const resiliencePolicyFile = "resilience.yaml"

// resiliencePolicy retries the backend's failed requests (twice, on
// another endpoint when there is one) and ejects an endpoint after 5
// gateway errors in a row: the quickstart's protection of a service.
const resiliencePolicy = `apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: backend-resilient}
spec:
  targetRefs: [{kind: Service, name: backend}]
  retry:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error]
    backoff: {base: 25ms}
  outlierDetection:
    consecutiveGatewayErrors: 5
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 50
`

// resilienceVariant is one row of the section: a TrafficPolicy ("" for
// none) and whether the gateway's /clusters then shows outlier detection
// on the backend's cluster.
type resilienceVariant struct {
	name    string
	policy  string
	outlier bool
}

// resilience runs workload (g): one meshgate gateway measured without a
// TrafficPolicy, then with retries and outlier detection on the backend
// Service, then both again; the policy changes over xDS between the rows.
func (r *runner) resilience(ctx context.Context, env *meshgateEnv) error {
	s := r.table.section(wlResilience, "no TrafficPolicy")
	path := filepath.Join(r.work, "policy", resiliencePolicyFile)
	defer os.Remove(path)
	// Each row twice, alternating: on a shared machine the spread between
	// the two runs of a row is the noise to read the difference against.
	variants := []resilienceVariant{
		{name: "no TrafficPolicy"},
		{name: "retries + outlier detection", policy: resiliencePolicy, outlier: true},
		{name: "no TrafficPolicy (again)"},
		{name: "retries + outlier detection (again)", policy: resiliencePolicy, outlier: true},
	}
	c, err := r.startMeshgateGateway(ctx, env, "meshgate")
	if err != nil {
		if c != nil {
			c.stop()
		}
		return err
	}
	defer c.stop()
	var errs []error
	for _, v := range variants {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if v.policy == "" {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("policy file: %w", err)
			}
		} else if err := os.WriteFile(path, []byte(v.policy), 0o644); err != nil {
			return fmt.Errorf("policy file: %w", err)
		}
		if err := waitResilience(ctx, c.admin, v, 20*time.Second); err != nil {
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w", v.name, err))
			continue
		}
		if r.mode.warmup > 0 {
			if _, out, err := runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.warmup); err != nil {
				return fmt.Errorf("warm-up: %w\n%s", err, out)
			}
		}
		resetPeakRSS(c.measured.pgid())
		before := sampleGroup(c.measured.pgid())
		start := time.Now()
		res, out, err := runWrk(ctx, c.h1+pathTiny, r.conns, r.cores, r.mode.duration)
		elapsed := time.Since(start)
		switch {
		case err != nil && toolMissing(err):
			s.rows = append(s.rows, row{contender: v.name, note: "not run: " + oneLine(err)})
			continue
		case err != nil:
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w\n%s", v.name, err, out))
			continue
		}
		after := sampleGroup(c.measured.pgid())
		rw := row{contender: v.name, res: res, rssMiB: float64(after.peakRSS) / (1 << 20)}
		if n := requestsOf(res, elapsed); n > 0 {
			rw.cpuMsPer1k = (after.cpuSeconds - before.cpuSeconds) * 1000 / (n / 1000)
		}
		r.log.Info("measured", "workload", wlResilience, "variant", v.name, "rps", int(res.rps), "p99ms", res.p99)
		s.rows = append(s.rows, rw)
	}
	s.notes = append(s.notes, "One gateway process, the TrafficPolicy (retry 2 attempts on connect-failure, reset, gateway-error; "+
		"outlier detection on 5 consecutive gateway errors) added and removed over xDS between the rows (no restart), each row run twice, alternating: the spread between a row's two runs is the noise. The backend never fails, "+
		"so the rows measure what the policy costs every request, not retries. "+
		"The rows run one after the other on a machine that may be shared: compare them within this run only.")
	return errors.Join(errs...)
}

// waitResilience waits until the gateway's /clusters shows v applied to
// the backend's cluster.
func waitResilience(ctx context.Context, admin string, v resilienceVariant, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		outlier, err := backendOutlierDetection(ctx, admin)
		switch {
		case err != nil:
			last = err
		case outlier == v.outlier:
			return nil
		default:
			last = fmt.Errorf("outlier detection %v, want %v", outlier, v.outlier)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("gateway did not apply %q: %w", v.name, last)
}

// backendOutlierDetection reads whether the gateway's /clusters shows
// outlier detection on the backend Service's cluster.
func backendOutlierDetection(ctx context.Context, admin string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/clusters", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var dump struct {
		Clusters []struct {
			Name             string `json:"name"`
			OutlierDetection bool   `json:"outlier_detection"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return false, fmt.Errorf("/clusters: %w", err)
	}
	for _, c := range dump.Clusters {
		if strings.Contains(c.Name, "/backend:") {
			return c.OutlierDetection, nil
		}
	}
	return false, errors.New("/clusters: no cluster of the Service backend")
}
