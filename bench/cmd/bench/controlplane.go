package main

import (
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
}

// controlPlane runs bench/xdsload at each scale of the mode.
func (r *runner) controlPlane(ctx context.Context) error {
	for _, sc := range r.mode.xdsScales {
		streams, services := max(sc[0], 2), max(sc[1], 2)
		out := filepath.Join(r.work, fmt.Sprintf("xdsload-%d.json", streams))
		args := []string{"-meshgate", r.meshgate, "-streams", strconv.Itoa(streams),
			"-services", strconv.Itoa(services), "-timeout", r.mode.xdsTimeout.String(), "-out", out,
			"-work", filepath.Join(r.work, fmt.Sprintf("xds-%d", streams))}
		if r.cpInsecureFlag != "" {
			args = append(args, "-controlplane-flag", r.cpInsecureFlag)
		}
		if r.profile {
			args = append(args, "-profile-dir", filepath.Join(abs(r.results), "profiles"))
		}
		r.log.Info("control plane at scale", "streams", streams, "services", services)
		p, err := r.procs.start(fmt.Sprintf("xdsload-%d", streams), r.xdsload, args, nil)
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
		if st := p.cmd.ProcessState; st != nil && st.ExitCode() == 3 { // xdsload: unsupported here
			r.table.xds = append(r.table.xds, xdsRow{streams: streams, services: services, note: "not run"})
			r.table.xdsNotes = append(r.table.xdsNotes, "xdsload not run: "+p.tail())
			r.log.Warn("control plane at scale not measured", "reason", p.tail())
			return nil
		}
		b, err := os.ReadFile(out)
		if err != nil || p.cmd.ProcessState == nil || !p.cmd.ProcessState.Success() {
			r.table.xds = append(r.table.xds, xdsRow{streams: streams, services: services, note: "failed, see below"})
			r.table.xdsNotes = append(r.table.xdsNotes, fmt.Sprintf("xdsload %d/%d failed:\n\n```\n%s\n```", streams, services, p.tail()))
			return fmt.Errorf("xdsload %d streams failed:\n%s", streams, p.tail())
		}
		var res xdsResult
		if err := json.Unmarshal(b, &res); err != nil {
			return fmt.Errorf("xdsload output: %w", err)
		}
		r.table.xds = append(r.table.xds, xdsRow{streams: streams, services: services, res: res})
	}
	return nil
}
