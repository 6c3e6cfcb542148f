package main

import (
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

func TestDevTracingFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		flags    devTracing
		endpoint string // "" for no tracing
		ui       string
		err      string
	}{
		{name: "none", flags: devTracing{sampling: 100}},
		{name: "jaeger", flags: devTracing{jaeger: "127.0.0.1:4317", sampling: 100}, endpoint: "127.0.0.1:4317", ui: "http://127.0.0.1:16686"},
		{name: "jaeger and its UI", flags: devTracing{jaeger: "10.0.0.2:4317", jaegerUI: "http://jaeger.test", sampling: 5}, endpoint: "10.0.0.2:4317", ui: "http://jaeger.test"},
		{name: "otlp", flags: devTracing{otlp: "127.0.0.1:14317", sampling: 100}, endpoint: "127.0.0.1:14317"},
		{name: "both", flags: devTracing{jaeger: "127.0.0.1:4317", otlp: "127.0.0.1:4317", sampling: 100}, err: "not both"},
		{name: "a name", flags: devTracing{jaeger: "jaeger:4317", sampling: 100}, err: `--jaeger "jaeger:4317": want the OTLP/gRPC receiver as ip:port`},
		{name: "sampling", flags: devTracing{otlp: "127.0.0.1:4317", sampling: 101}, err: "--trace-sampling 101"},
		{name: "ui alone", flags: devTracing{jaegerUI: "http://x", sampling: 100}, err: "--jaeger-ui goes with --jaeger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := tt.flags.spec()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.endpoint == "" {
				if spec != nil || tt.flags.banner(spec) != "" {
					t.Fatalf("tracing %+v without flags", spec)
				}
				return
			}
			if spec.Endpoint != tt.endpoint || spec.Protocol != policy.TracingProtocolGRPC || *spec.Sampling != tt.flags.sampling {
				t.Errorf("spec %+v", spec)
			}
			banner := tt.flags.banner(spec)
			if !strings.Contains(banner, tt.endpoint) || (tt.ui != "") != strings.Contains(banner, "Jaeger: "+tt.ui) || tt.flags.ui() != tt.ui {
				t.Errorf("banner %q, want the UI %q", banner, tt.ui)
			}
		})
	}
}

// TestWithTracing: the wrapped evaluation's MeshConfig has the tracing
// (one is made when the policy has none); the evaluation's own set is left
// as it was.
func TestWithTracing(t *testing.T) {
	t.Parallel()
	sampling := 100.0
	tracing := &policy.Tracing{Endpoint: "127.0.0.1:4317", Sampling: &sampling}
	own := &policy.MeshConfig{Name: "mesh", Spec: policy.MeshConfigSpec{TrustDomain: "example.org"}}
	for _, mc := range []*policy.MeshConfig{own, nil} {
		result := &policy.Result{Set: &policy.Set{MeshConfig: mc}}
		got := withTracing(func(policy.Input) *policy.Result { return result }, tracing)(policy.Input{})
		if got.Set.MeshConfig.Spec.Tracing != tracing {
			t.Errorf("tracing %+v", got.Set.MeshConfig.Spec.Tracing)
		}
		if mc != nil && (got.Set.MeshConfig.Spec.TrustDomain != "example.org" || mc.Spec.Tracing != nil) {
			t.Errorf("MeshConfig %+v, evaluated %+v", got.Set.MeshConfig, mc)
		}
		if result.Set.MeshConfig != mc {
			t.Error("the evaluated set was modified")
		}
	}
}
