package main

import (
	"cmp"
	"fmt"
	"strings"
)

// row is one measurement of one contender under one workload.
type row struct {
	contender string
	res       loadResult
	// cpuMsPer1k is the proxy's CPU milliseconds per 1000 requests (the same
	// number as its milli-cores per 1000 req/s); 0 when not measured.
	cpuMsPer1k float64
	rssMiB     float64
	note       string
}

// section is one workload: rows compared with the row named baseline.
type section struct {
	title    string
	baseline string
	rows     []row
	notes    []string
}

// xdsRow is one xdsload run.
type xdsRow struct {
	streams, services int
	scope             string // xdsload -scope
	endpoints         string // xdsload -endpoints as run
	res               xdsResult
	note              string
}

// scopeLabel names an xdsload scope in the table.
func scopeLabel(scope string) string {
	switch scope {
	case "", scopeAll:
		return "all services"
	case scopeAuthorized:
		return "authorized (zero trust, ~4 services per sidecar)"
	}
	return scope
}

// endpointsLabel names where a run's endpoints came from: its result's
// endpointSource, else what it was run with.
func (x xdsRow) endpointsLabel() string {
	switch cmp.Or(x.res.EndpointSource, x.endpoints, endpointsFile) {
	case endpointsConsul:
		return "Consul catalog"
	case endpointsFile:
		return "policy files"
	default:
		return x.res.EndpointSource
	}
}

// table is every result of a run, rendered once at the end.
type table struct {
	sections []*section
	xds      []xdsRow
	xdsNotes []string
	consul   consulResult
	scale    []scaleRow
}

func (t *table) section(title, baseline string) *section {
	for _, s := range t.sections {
		if s.title == title {
			return s
		}
	}
	s := &section{title: title, baseline: baseline}
	t.sections = append(t.sections, s)
	return s
}

func (s *section) find(name string) (row, bool) {
	for _, r := range s.rows {
		if r.contender == name && r.note == "" {
			return r, true
		}
	}
	return row{}, false
}

// ratio formats v/base as "×1.23", or "" when either is unknown.
func ratio(v, base float64) string {
	if v <= 0 || base <= 0 {
		return ""
	}
	return fmt.Sprintf("×%.2f", v/base)
}

func num(v float64, format string) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// markdown renders the whole table with the machine facts on top.
func (t *table) markdown(facts []string) string {
	var b strings.Builder
	b.WriteString("# meshgate benchmark results\n\n")
	for _, f := range facts {
		fmt.Fprintf(&b, "- %s\n", f)
	}
	for _, s := range t.sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.title)
		base, _ := s.find(s.baseline)
		fmt.Fprintf(&b, "| contender | req/s | vs %[1]s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 vs %[1]s | errors | CPU ms/1k req | vs %[1]s | peak RSS MiB | vs %[1]s |\n", s.baseline)
		b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, r := range s.rows {
			if r.note != "" {
				fmt.Fprintf(&b, "| %s | %s |  |  |  |  |  |  |  |  |  |  |  |\n", r.contender, r.note)
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s |\n",
				r.contender, num(r.res.rps, "%.0f"), ratio(r.res.rps, base.res.rps),
				num(r.res.p50, "%.3f"), num(r.res.p90, "%.3f"), num(r.res.p99, "%.3f"), num(r.res.p999, "%.3f"),
				ratio(r.res.p99, base.res.p99), r.res.errors,
				num(r.cpuMsPer1k, "%.1f"), ratio(r.cpuMsPer1k, base.cpuMsPer1k),
				num(r.rssMiB, "%.1f"), ratio(r.rssMiB, base.rssMiB))
		}
		for _, n := range s.notes {
			fmt.Fprintf(&b, "\n%s\n", n)
		}
	}
	b.WriteString(t.consul.markdown())
	b.WriteString(scaleMarkdown(t.scale))
	if len(t.xds) > 0 || len(t.xdsNotes) > 0 {
		b.WriteString("\n## Control plane at scale (bench/xdsload)\n\n")
		b.WriteString("Time from the change (policy file rewritten; with endpoints from the Consul catalog, the endpoint change counts from the catalog write's answer) until each ADS stream ACKed a response carrying it; ratios against the first row.\n\n")
		b.WriteString("| streams (gateways) | services | sidecars receive | endpoints from | all connected s | policy change p50 / p99 / max ms | vs first | endpoint change p50 / p99 / max ms | vs first | CP CPU s | CP peak RSS MiB | vs first |\n")
		b.WriteString("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		var first xdsResult
		for i, x := range t.xds {
			if x.note != "" {
				fmt.Fprintf(&b, "| %d | %d | %s | %s | %s |  |  |  |  |  |  |  |\n", x.streams, x.services, scopeLabel(x.scope), x.endpointsLabel(), x.note)
				continue
			}
			if i == 0 || first.Streams == 0 {
				first = x.res
			}
			p, e := x.res.Policy, x.res.Endpoint
			fmt.Fprintf(&b, "| %d (%d) | %d | %s | %s | %.2f | %.0f / %.0f / %.0f | %s | %.0f / %.0f / %.0f | %s | %.1f | %.1f | %s |\n",
				x.res.Streams, x.res.Gateways, x.res.Services, scopeLabel(x.scope)+sidecarClusters(p), x.endpointsLabel(), x.res.ConnectSeconds,
				p.P50MS, p.P99MS, p.MaxMS, ratio(p.MaxMS, first.Policy.MaxMS),
				e.P50MS, e.P99MS, e.MaxMS, ratio(e.MaxMS, first.Endpoint.MaxMS),
				x.res.ControlPlaneCPUSeconds, x.res.ControlPlanePeakRSSMiB,
				ratio(x.res.ControlPlanePeakRSSMiB, first.ControlPlanePeakRSSMiB))
		}
		for _, x := range t.xds {
			if all, ok := t.xdsAllServices(x); ok && x.scope == scopeAuthorized && x.note == "" {
				endpoint := ratio(x.res.Endpoint.MaxMS, all.res.Endpoint.MaxMS)
				if from, base := x.endpointsLabel(), all.endpointsLabel(); from != base {
					endpoint += fmt.Sprintf(" (%s vs %s)", from, base)
				}
				fmt.Fprintf(&b, "\nAuthorized scope vs all services at %d streams / %d services: policy change max %s, endpoint change max %s, all connected %s, CP CPU %s, CP peak RSS %s.\n",
					x.streams, x.services, ratio(x.res.Policy.MaxMS, all.res.Policy.MaxMS), endpoint,
					ratio(x.res.ConnectSeconds, all.res.ConnectSeconds), ratio(x.res.ControlPlaneCPUSeconds, all.res.ControlPlaneCPUSeconds),
					ratio(x.res.ControlPlanePeakRSSMiB, all.res.ControlPlanePeakRSSMiB))
			}
		}
		for _, n := range t.xdsNotes {
			fmt.Fprintf(&b, "\n%s\n", n)
		}
	}
	return b.String()
}

// sidecarClusters is how many clusters the sidecars held after a change,
// when xdsload measured it.
func sidecarClusters(c xdsChange) string {
	switch {
	case c.SidecarClustersMax == 0:
		return ""
	case c.SidecarClustersMin == c.SidecarClustersMax:
		return fmt.Sprintf(": %d clusters", c.SidecarClustersMax)
	}
	return fmt.Sprintf(": %d–%d clusters", c.SidecarClustersMin, c.SidecarClustersMax)
}

// xdsAllServices is the measured run with every service on every sidecar at
// the size of x, to compare a scoped run with.
func (t *table) xdsAllServices(x xdsRow) (xdsRow, bool) {
	for _, y := range t.xds {
		if y.scope == scopeAll && y.note == "" && y.streams == x.streams && y.services == x.services {
			return y, true
		}
	}
	return xdsRow{}, false
}
