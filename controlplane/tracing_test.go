package controlplane

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/internal/testutil"
)

const tracingMeshConfig = `apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing: {endpoint: "127.0.0.1:4317", sampling: 0, resourceAttributes: {deployment.environment: test}}
---
`

// reloadTraces groups the exported spans by trace: each trace's span
// names, and its root's attributes.
func reloadTraces(exp *tracetest.InMemoryExporter) (names map[string][]string, roots map[string]map[string]string) {
	names, roots = map[string][]string{}, map[string]map[string]string{}
	for _, s := range exp.GetSpans() {
		id := s.SpanContext.TraceID().String()
		names[id] = append(names[id], s.Name)
		if !s.Parent.IsValid() {
			roots[id] = map[string]string{"service.name": ""}
			for _, kv := range s.Attributes {
				roots[id][string(kv.Key)] = kv.Value.String()
			}
			for _, kv := range s.Resource.Attributes() {
				roots[id][string(kv.Key)] = kv.Value.String()
			}
		}
	}
	return names, roots
}

// TestControlPlaneTracesItsReloads: with MeshConfig spec.tracing (whatever
// its sampling), every policy change is one trace of the control plane:
// "policy reload" with its load, evaluate, and translate-and-push steps,
// the version, resource and error counts and the proxies updated as
// attributes, to the mesh's collector as service meshgate-controlplane;
// an edit whose resources are rejected is a trace with its error count.
// Without spec.tracing no exporter is built.
func TestControlPlaneTracesItsReloads(t *testing.T) {
	t.Parallel()
	t.Run("traced", func(t *testing.T) {
		t.Parallel()
		exp := tracetest.NewInMemoryExporter()
		var built atomic.Int32
		dir := t.TempDir()
		path := filepath.Join(dir, "policy.yaml")
		writeAtomically(t, path, tracingMeshConfig+strings.ReplaceAll(serviceYAML, "%s", "orders"))
		r := startWith(t, Options{ConfigPaths: []string{path}, TraceExporter: func(tr *model.Tracing) (sdktrace.SpanExporter, error) {
			if tr.Endpoint != "127.0.0.1:4317" {
				return nil, fmt.Errorf("endpoint %q", tr.Endpoint)
			}
			built.Add(1)
			return exp, nil
		}})
		first := waitStatus(t, r, "the initial load", func(s Status) bool { return s.Version != "" })
		wantTrace := func(what, version string, wantErr bool) {
			t.Helper()
			testutil.Eventually(t, 30*time.Second, what, func() error {
				names, roots := reloadTraces(exp)
				for id, root := range roots {
					if root["meshgate.policy.version"] != version || (root["meshgate.policy.errors"] != "0") != wantErr {
						continue
					}
					if got := strings.Join(names[id], ","); got != "policy load,policy evaluate,translate and push,policy reload" {
						return fmt.Errorf("trace %s: spans %s", id, got)
					}
					if root["service.name"] != ControlPlaneServiceName || root["deployment.environment"] != "test" || root["meshgate.policy.resources"] == "" {
						return fmt.Errorf("root %v", root)
					}
					return nil
				}
				return fmt.Errorf("no trace of version %s (error %v) among %v", version, wantErr, roots)
			})
		}
		wantTrace("the initial load traced", first.Version, false)

		writeAtomically(t, path, tracingMeshConfig+strings.ReplaceAll(serviceYAML, "%s", "payments"))
		second := waitStatus(t, r, "a new version", func(s Status) bool { return s.Version != first.Version })
		wantTrace("the change traced", second.Version, false)

		// A file that cannot be read: its resources keep their last good
		// version, and the edit is a trace with its error.
		writeAtomically(t, path, tracingMeshConfig+"kind: [")
		waitStatus(t, r, "the rejected change", func(s Status) bool { return s.LastError != "" })
		wantTrace("the rejected edit traced", second.Version, true)
		if _, roots := reloadTraces(exp); len(roots) != 3 || built.Load() != 1 {
			t.Errorf("%d traces (want one per change: 3), %d exporters built (want 1)", len(roots), built.Load())
		}
	})
	t.Run("not traced", func(t *testing.T) {
		t.Parallel()
		var built atomic.Int32
		dir := t.TempDir()
		path := filepath.Join(dir, "policy.yaml")
		writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "orders"))
		r := startWith(t, Options{ConfigPaths: []string{path}, TraceExporter: func(*model.Tracing) (sdktrace.SpanExporter, error) {
			built.Add(1)
			return tracetest.NewInMemoryExporter(), nil
		}})
		first := waitStatus(t, r, "the initial load", func(s Status) bool { return s.Version != "" })
		writeAtomically(t, path, strings.ReplaceAll(serviceYAML, "%s", "payments"))
		waitStatus(t, r, "a new version", func(s Status) bool { return s.Version != first.Version })
		if built.Load() != 0 {
			t.Errorf("an exporter was built without spec.tracing")
		}
	})
}
