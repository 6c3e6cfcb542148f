package main

import (
	"context"
	"encoding/json"
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
	applied := func(tracers, logFiles int) func(context.Context, string) error {
		return func(ctx context.Context, admin string) error {
			st, err := observabilityStats(ctx, admin)
			switch {
			case err != nil:
				return err
			case st.Tracing.Tracers != tracers || st.AccessLog.Files != logFiles:
				return fmt.Errorf("tracers %d, access log files %d; want %d, %d", st.Tracing.Tracers, st.AccessLog.Files, tracers, logFiles)
			}
			return nil
		}
	}
	notes := func(name string) func(context.Context, string) {
		return func(ctx context.Context, admin string) {
			if st, err := observabilityStats(ctx, admin); err == nil {
				s.notes = append(s.notes, fmt.Sprintf("%s: since the gateway started, spans exported %d, dropped %d; access-log lines written %d, dropped %d.",
					name, st.Tracing.SpansExported, st.Tracing.SpansDropped, st.AccessLog.LinesWritten, st.AccessLog.LinesDropped))
			}
		}
	}
	rows := []policyRow{
		{name: "off", applied: applied(0, 0)},
		{name: "tracing 1%", policy: tracing(1), applied: applied(1, 0), after: notes("tracing 1%")},
		{name: "tracing 100%", policy: tracing(100), applied: applied(1, 0), after: notes("tracing 100%")},
		{name: "access log (file)", policy: accessLog, applied: applied(0, 1), after: notes("access log (file)")},
	}
	c, err := r.startMeshgateGateway(ctx, env, "meshgate")
	if err != nil {
		if c != nil {
			c.stop()
		}
		return err
	}
	defer c.stop()
	err = r.measurePolicyRows(ctx, c, s, wlObservability, filepath.Join(dir, observabilityPolicyFile), rows)
	if len(s.notes) == 0 {
		s.notes = append(s.notes, "One gateway process, the policy changed over xDS between rows (no restart). "+
			"Tracing exports OTLP/HTTP to the backend, which drops the spans; the access log appends one JSON line per request to a file. "+
			"The rows run one after the other on a machine that may be shared: compare them within this run only.")
	}
	return err
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
