package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// sampledRoutes are two gateway routes to orders: /traced, annotated to
// sample every request that starts a trace, and the rest, at the mesh's
// sampling.
const sampledRoutes = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: traced
  annotations: {meshgate.dev/tracing-sampling: "100"}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /traced}}]
      backendRefs: [{name: orders, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: orders, port: 80}]
`

// TestTracingRouteSamplingAndLiveChange: in a mesh tracing at 0%, a route
// annotated meshgate.dev/tracing-sampling: "100" is traced (the whole
// trace, gateway and orders' sidecar, in a real Jaeger) while the other
// route is not; MeshConfig sampling changed from 0 to 100 while everything
// runs makes the other route traced too, without restarting anything; the
// control plane's own trace of that change (reload, load, evaluate,
// translate and push, 2 proxies updated) is in Jaeger too.
func TestTracingRouteSamplingAndLiveChange(t *testing.T) {
	t.Parallel()
	j := startJaeger(t)
	c := newCluster(t)
	c.policy("mesh.yaml", yamlDocs(edgeGateway, sampledRoutes, meshServices("orders")))
	c.policy("tracing.yaml", tracingPolicy(j.otlpGRPC, "grpc", 0))
	c.startControlPlane()
	m := startMesh(c, c.sidecar, []string{"orders"})

	// call sends one request and returns the traceparent orders received.
	call := func(path string) (string, error) {
		r, err := get(m.gw + path)
		if err != nil {
			return "", err
		}
		if err := servedBy("orders")(r); err != nil {
			return "", err
		}
		tp := r.reply.Headers["traceparent"]
		if traceIDOf(tp) == "" {
			return "", fmt.Errorf("orders got no traceparent (%q)", tp)
		}
		return tp, nil
	}
	// traced waits until a request to path is sampled, and for its whole
	// trace (4 spans: the gateway's and orders' sidecar's server and
	// client spans) in Jaeger.
	traced := func(what, path string) {
		t.Helper()
		var tp string
		eventually(t, 15*time.Second, what, func() error {
			var err error
			if tp, err = call(path); err != nil {
				return err
			}
			if !strings.HasSuffix(tp, "-01") {
				return fmt.Errorf("traceparent %s not sampled", tp)
			}
			return nil
		})
		id := traceIDOf(tp)
		eventually(t, 20*time.Second, "trace "+id+" whole in jaeger", func() error {
			tr, err := j.trace(id)
			if err != nil {
				return err
			}
			if len(tr.Spans) < 4 {
				return fmt.Errorf("%d spans, want 4", len(tr.Spans))
			}
			return nil
		})
	}

	// The gateway is ready before it has its routes: the first request
	// waits for them.
	eventually(t, 15*time.Second, "the gateway routes to orders", func() error {
		_, err := call("/plain")
		return err
	})
	var unsampled []string
	for range 5 {
		tp, err := call("/plain")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(tp, "-00") {
			t.Fatalf("a request of the route at the mesh's 0%% was sampled: %s", tp)
		}
		unsampled = append(unsampled, traceIDOf(tp))
	}
	traced("the route at 100% sampled", "/traced/1")
	// Its trace whole in Jaeger, the spans ended before it were exported
	// too: the unsampled ones are not there.
	for _, id := range unsampled {
		if _, err := j.trace(id); !errors.Is(err, errTraceNotFound) {
			t.Errorf("trace %s of the route at 0%% in jaeger (%v)", id, err)
		}
	}

	gatewayPID, ordersPID := m.gateway.cmd.Process.Pid, m.sidecars["orders"].cmd.Process.Pid
	c.policy("tracing.yaml", tracingPolicy(j.otlpGRPC, "grpc", 100))
	traced("the mesh's sampling changed to 100 while running", "/plain")
	if m.gateway.exited() || m.sidecars["orders"].exited() || m.gateway.cmd.Process.Pid != gatewayPID || m.sidecars["orders"].cmd.Process.Pid != ordersPID {
		t.Error("a proxy restarted")
	}

	// The control plane traced its own work: the sampling change is a
	// trace of its reload, which updated both proxies.
	eventually(t, 20*time.Second, "the control plane's trace of the change in jaeger", func() error {
		var out struct {
			Data []jaegerTrace `json:"data"`
		}
		if err := j.get("/api/traces?service=meshgate-controlplane&limit=50", &out); err != nil {
			return err
		}
		for _, tr := range out.Data {
			names := map[string]jaegerSpan{}
			for _, s := range tr.Spans {
				names[s.OperationName] = s
			}
			root, ok := names["policy reload"]
			if ok && root.tag("meshgate.proxies.updated") == "2" && names["translate and push"].SpanID != "" &&
				names["policy load"].SpanID != "" && names["policy evaluate"].SpanID != "" {
				return nil
			}
		}
		return fmt.Errorf("%d control plane traces, none of a reload that updated both proxies", len(out.Data))
	})
}
