package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// wlObservability is the section of the cost of tracing and access logs.
const wlObservability = "(f) observability cost: meshgate gateway, tiny body, max rate (wrk), one gateway, same run"

// pathOTLPTraces is where the backend accepts OTLP/HTTP spans (and drops
// them): the collector of the tracing rows.
const pathOTLPTraces = "/v1/traces"

// observabilityPolicyFile is the MeshConfig of the tracing and access-log
// rows, in the data-plane policy directory while they run.
const observabilityPolicyFile = "observability.yaml"

// observabilityVariant is one row of the section: a MeshConfig (""
// for none) and what the gateway's /stats shows once it applies it.
type observabilityVariant struct {
	name       string
	meshConfig string
	tracers    int // tracing.tracers
	logFiles   int // access_log.files
}

// observability runs workload (f): one meshgate gateway measured with
// tracing off, at 1% and 100% sampling (spans exported over OTLP/HTTP to
// the backend, which drops them), and with the access log on (a file),
// one after the other; the policy changes over xDS between the rows.
func (r *runner) observability(ctx context.Context, env *meshgateEnv, backend string) error {
	s := r.table.section(wlObservability, "off")
	dir := filepath.Join(r.work, "policy")
	defer os.Remove(filepath.Join(dir, observabilityPolicyFile))
	tracing := func(percent int) string {
		return fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {endpoint: %q, protocol: http, sampling: %d}
`, backend, percent)
	}
	accessLog := fmt.Sprintf(`apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: %q}
`, filepath.Join(r.work, "access.log"))
	variants := []observabilityVariant{
		{name: "off"},
		{name: "tracing 1%", meshConfig: tracing(1), tracers: 1},
		{name: "tracing 100%", meshConfig: tracing(100), tracers: 1},
		{name: "access log (file)", meshConfig: accessLog, logFiles: 1},
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
		path := filepath.Join(dir, observabilityPolicyFile)
		if v.meshConfig == "" {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("policy file: %w", err)
			}
		} else if err := os.WriteFile(path, []byte(v.meshConfig), 0o644); err != nil {
			return fmt.Errorf("policy file: %w", err)
		}
		if err := waitObservability(ctx, c.admin, v, 20*time.Second); err != nil {
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
		r.log.Info("measured", "workload", wlObservability, "variant", v.name, "rps", int(res.rps), "p99ms", res.p99)
		s.rows = append(s.rows, rw)
		if st, err := observabilityStats(ctx, c.admin); err == nil && v.meshConfig != "" {
			s.notes = append(s.notes, fmt.Sprintf("%s: since the gateway started, spans exported %d, dropped %d; access-log lines written %d, dropped %d.",
				v.name, st.Tracing.SpansExported, st.Tracing.SpansDropped, st.AccessLog.LinesWritten, st.AccessLog.LinesDropped))
		}
	}
	if len(s.notes) == 0 {
		s.notes = append(s.notes, "One gateway process, the policy changed over xDS between rows (no restart). "+
			"Tracing exports OTLP/HTTP to the backend, which drops the spans; the access log appends one JSON line per request to a file. "+
			"The rows run one after the other on a machine that may be shared: compare them within this run only.")
	}
	return errors.Join(errs...)
}

// gatewayStats is what the section reads of a gateway's /stats.
type gatewayStats struct {
	Tracing struct {
		Tracers       int    `json:"tracers"`
		SpansExported uint64 `json:"spans_exported"`
		SpansDropped  uint64 `json:"spans_dropped"`
	} `json:"tracing"`
	AccessLog struct {
		Files        int    `json:"files"`
		LinesWritten uint64 `json:"lines_written"`
		LinesDropped uint64 `json:"lines_dropped"`
	} `json:"access_log"`
}

// observabilityStats reads the gateway's /stats.
func observabilityStats(ctx context.Context, admin string) (*gatewayStats, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+"/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st gatewayStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("/stats: %w", err)
	}
	return &st, nil
}

// waitObservability waits until the gateway's /stats shows v applied.
func waitObservability(ctx context.Context, admin string, v observabilityVariant, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		st, err := observabilityStats(ctx, admin)
		switch {
		case err != nil:
			last = err
		case st.Tracing.Tracers == v.tracers && st.AccessLog.Files == v.logFiles:
			return nil
		default:
			last = fmt.Errorf("tracers %d, access log files %d; want %d, %d", st.Tracing.Tracers, st.AccessLog.Files, v.tracers, v.logFiles)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("gateway did not apply %q: %w", v.name, last)
}
