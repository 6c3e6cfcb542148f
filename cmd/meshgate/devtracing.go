package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/meshgate/meshgate/policy"
)

// devTracing is where meshgate dev sends the traces of its proxies: the
// --jaeger or --otlp-endpoint flags, as a MeshConfig spec.tracing would.
type devTracing struct {
	jaeger   string  // Jaeger's OTLP/gRPC receiver, ip:port
	jaegerUI string  // Jaeger's UI URL (default: http://<jaeger's host>:16686)
	otlp     string  // any OTLP/gRPC receiver, ip:port
	sampling float64 // percent of new traces sampled
}

// spec is the spec.tracing the flags make, nil without either; an error
// names the flag.
func (d *devTracing) spec() (*policy.Tracing, error) {
	endpoint, flag := d.jaeger, "--jaeger"
	switch {
	case d.jaeger != "" && d.otlp != "":
		return nil, fmt.Errorf("give --jaeger or --otlp-endpoint, not both")
	case d.otlp != "":
		endpoint, flag = d.otlp, "--otlp-endpoint"
	case d.jaeger == "":
		if d.jaegerUI != "" {
			return nil, fmt.Errorf("--jaeger-ui goes with --jaeger")
		}
		return nil, nil
	}
	if _, err := netip.ParseAddrPort(endpoint); err != nil {
		return nil, fmt.Errorf("%s %q: want the OTLP/gRPC receiver as ip:port (e.g. 127.0.0.1:4317)", flag, endpoint)
	}
	if !(d.sampling >= 0 && d.sampling <= 100) {
		return nil, fmt.Errorf("--trace-sampling %g: want a percentage from 0 to 100", d.sampling)
	}
	sampling := d.sampling
	return &policy.Tracing{Endpoint: endpoint, Protocol: policy.TracingProtocolGRPC, Sampling: &sampling}, nil
}

// ui is the Jaeger UI URL to print, "" without --jaeger.
func (d *devTracing) ui() string {
	if d.jaeger == "" {
		return ""
	}
	if d.jaegerUI != "" {
		return d.jaegerUI
	}
	host, _, _ := net.SplitHostPort(d.jaeger)
	return "http://" + net.JoinHostPort(host, strconv.Itoa(16686))
}

// banner is the banner's line about traces, "" without tracing.
func (d *devTracing) banner(t *policy.Tracing) string {
	if t == nil {
		return ""
	}
	line := fmt.Sprintf("  traces      OTLP/gRPC to %s, %g%% of new traces sampled", t.Endpoint, *t.Sampling)
	if ui := d.ui(); ui != "" {
		line += fmt.Sprintf("\n              look at them in Jaeger: %s (service edge, frontend, orders...)", ui)
	}
	return line + "\n"
}

// withTracing wraps evaluate so that the policy's MeshConfig (one is made
// when the policy has none) has spec.tracing t, whatever its files say.
// The set evaluate returns is not modified: it may be cached.
func withTracing(evaluate func(policy.Input) *policy.Result, t *policy.Tracing) func(policy.Input) *policy.Result {
	return func(in policy.Input) *policy.Result {
		r := evaluate(in)
		if r == nil || r.Set == nil {
			return r
		}
		mc := &policy.MeshConfig{Name: "mesh"}
		if r.Set.MeshConfig != nil {
			copied := *r.Set.MeshConfig
			mc = &copied
		}
		mc.Spec.Tracing = t
		set := *r.Set
		set.MeshConfig = mc
		out := *r
		out.Set = &set
		return &out
	}
}
