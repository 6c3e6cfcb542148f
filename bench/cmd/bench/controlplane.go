package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// xdsResult mirrors bench/xdsload's JSON output.
type xdsResult struct {
	Streams                int       `json:"streams"`
	Gateways               int       `json:"gateways"`
	Services               int       `json:"services"`
	Scope                  string    `json:"scope"`
	EndpointSource         string    `json:"endpointSource"` // "" from an older xdsload: file
	ConnectSeconds         float64   `json:"connectSeconds"`
	Policy                 xdsChange `json:"policyChange"`
	Endpoint               xdsChange `json:"endpointChange"`
	ControlPlaneCPUSeconds float64   `json:"controlPlaneCPUSeconds"`
	ControlPlanePeakRSSMiB float64   `json:"controlPlanePeakRSSMiB"`
}

// xdsChange is the propagation of one change to every stream.
type xdsChange struct {
	P50MS float64 `json:"p50Ms"`
	P99MS float64 `json:"p99Ms"`
	MaxMS float64 `json:"maxMs"`
	Acked int     `json:"acked"`
	// Clusters a sidecar's stream held when it reached the change.
	SidecarClustersMin int `json:"sidecarClustersMin"`
	SidecarClustersMax int `json:"sidecarClustersMax"`
}

// controlPlane runs bench/xdsload for each run of the mode.
func (r *runner) controlPlane(ctx context.Context) error {
	for _, run := range r.mode.xdsRuns {
		streams, services := max(run.streams, 2), max(run.services, 2)
		name := fmt.Sprintf("xdsload-%d-%s", streams, run.scope)
		out := filepath.Join(r.work, name+".json")
		endpoints, why := xdsEndpoints(run, r.consulBin)
		if why != "" {
			r.table.xdsNotes = append(r.table.xdsNotes, fmt.Sprintf("xdsload %d/%d (scope %s): endpoints from policy files, not Consul: %s.", streams, services, run.scope, why))
			r.log.Warn("xdsload endpoints from policy files", "scope", run.scope, "reason", why)
		}
		args := []string{"-meshgate", r.meshgate, "-streams", strconv.Itoa(streams),
			"-services", strconv.Itoa(services), "-scope", run.scope, "-endpoints", endpoints,
			"-timeout", r.mode.xdsTimeout.String(), "-out", out,
			"-work", filepath.Join(r.work, fmt.Sprintf("xds-%d-%s", streams, run.scope))}
		if endpoints == endpointsConsul {
			args = append(args, "-consul-bin", r.consulBin)
		}
		if r.cpInsecureFlag != "" {
			args = append(args, "-controlplane-flag", r.cpInsecureFlag)
		}
		if r.profile {
			dir := filepath.Join(abs(r.results), "profiles")
			if run.scope != scopeAll { // the scoped run's profiles beside, not over, the largest run's
				dir = filepath.Join(dir, run.scope)
			}
			args = append(args, "-profile-dir", dir)
		}
		r.log.Info("control plane at scale", "streams", streams, "services", services, "scope", run.scope, "endpoints", endpoints)
		p, err := r.procs.start(name, r.xdsload, args, nil)
		if err != nil {
			return err
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			p.stop()
			return ctx.Err()
		case <-time.After(r.mode.xdsTimeout + time.Minute):
			p.stop()
		}
		row := xdsRow{streams: streams, services: services, scope: run.scope, endpoints: endpoints}
		if st := p.cmd.ProcessState; st != nil && st.ExitCode() == 3 { // xdsload: unsupported here
			row.note = "not run"
			r.table.xds = append(r.table.xds, row)
			r.table.xdsNotes = append(r.table.xdsNotes, "xdsload not run: "+p.tail())
			r.log.Warn("control plane at scale not measured", "reason", p.tail())
			return nil
		}
		b, err := os.ReadFile(out)
		if err != nil || p.cmd.ProcessState == nil || !p.cmd.ProcessState.Success() {
			row.note = "failed, see below"
			r.table.xds = append(r.table.xds, row)
			r.table.xdsNotes = append(r.table.xdsNotes, fmt.Sprintf("xdsload %d/%d (scope %s) failed:\n\n```\n%s\n```", streams, services, run.scope, p.tail()))
			return fmt.Errorf("xdsload %d streams (scope %s) failed:\n%s", streams, run.scope, p.tail())
		}
		if err := json.Unmarshal(b, &row.res); err != nil {
			return fmt.Errorf("xdsload output: %w", err)
		}
		r.table.xds = append(r.table.xds, row)
	}
	return nil
}

// xdsEndpoints is the xdsload -endpoints of run: endpointsConsul falls back
// to endpointsFile without the Consul binary (consulBin ""), and why says so.
func xdsEndpoints(run xdsRun, consulBin string) (endpoints, why string) {
	endpoints = cmp.Or(run.endpoints, endpointsFile)
	if endpoints == endpointsConsul && consulBin == "" {
		return endpointsFile, "Consul binary not built (make consul)"
	}
	return endpoints, ""
}
