package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// tracingPolicy is a MeshConfig that sends the mesh's spans to endpoint at
// sampling percent.
func tracingPolicy(endpoint, protocol string, sampling int) string {
	return fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  tracing:
    endpoint: %q
    protocol: %s
    sampling: %d
    resourceAttributes: {deployment.environment: e2e}
`, endpoint, protocol, sampling)
}

// randomHex is n random bytes in hex.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// traceIDOf is the trace id of a traceparent header value.
func traceIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

// spansPerCall is what one request gateway → frontend → orders leaves:
// server and client spans at the gateway, at the frontend's inbound and
// outbound listeners, and at the orders' inbound listener.
const spansPerCall = 8

// wholeTrace waits until Jaeger has every span of trace id.
func wholeTrace(t *testing.T, j *jaeger, id string) *jaegerTrace {
	t.Helper()
	var tr *jaegerTrace
	eventually(t, 20*time.Second, "trace "+id+" whole in jaeger", func() error {
		var err error
		if tr, err = j.trace(id); err != nil {
			return err
		}
		if len(tr.Spans) < spansPerCall {
			return fmt.Errorf("%d spans, want %d", len(tr.Spans), spansPerCall)
		}
		return nil
	})
	return tr
}

// TestTracingThroughTheMesh: with MeshConfig spec.tracing, one request
// through gateway → sidecar(frontend) → frontend → sidecar(frontend,
// outbound) → sidecar(orders) → orders is one trace in a real Jaeger, each
// span the child of the one before, with the semantic-convention and
// meshgate attributes; an incoming traceparent is continued; sampling 0,
// applied without a restart, exports nothing.
func TestTracingThroughTheMesh(t *testing.T) {
	t.Parallel()
	j := startJaeger(t)
	c := newCluster(t)
	c.policy("mesh.yaml", meshPolicy())
	c.policy("tracing.yaml", tracingPolicy(j.otlpGRPC, "grpc", 100))
	c.startControlPlane()
	m := startMesh(c, c.sidecar, []string{"frontend", "orders"})
	gw := m.gw

	// call sends one request through the whole mesh and returns the
	// traceparent the orders app received.
	call := func(headers ...string) (string, error) {
		r, err := get(gw+"/call/orders/items", append([]string{"User-Agent: tracing-e2e"}, headers...)...)
		if err != nil {
			return "", err
		}
		if err := servedBy("frontend")(r); err != nil {
			return "", err
		}
		if r.reply.UpstreamStatus != http.StatusOK || r.reply.Upstream == nil || r.reply.Upstream.Service != "orders" {
			return "", fmt.Errorf("upstream: %d %+v", r.reply.UpstreamStatus, r.reply.Upstream)
		}
		tp := r.reply.Upstream.Headers["traceparent"]
		if traceIDOf(tp) == "" {
			return "", fmt.Errorf("orders got no traceparent (%q)", tp)
		}
		return tp, nil
	}

	t.Run("one trace, every hop, correctly parented", func(t *testing.T) {
		var traceparent string
		eventually(t, 15*time.Second, "a call through the mesh", func() error {
			var err error
			traceparent, err = call()
			return err
		})
		tr := wholeTrace(t, j, traceIDOf(traceparent))
		if len(tr.Spans) != spansPerCall {
			t.Fatalf("%d spans, want %d", len(tr.Spans), spansPerCall)
		}
		byID := map[string]jaegerSpan{}
		for _, s := range tr.Spans {
			byID[s.SpanID] = s
		}
		service := func(s jaegerSpan) string { return tr.Processes[s.ProcessID].ServiceName }
		// Walk from the root: server, client, server, ... alternating, one
		// child each, through the services in order.
		var roots []jaegerSpan
		children := map[string][]jaegerSpan{}
		for _, s := range tr.Spans {
			if p := s.parent(); p == "" {
				roots = append(roots, s)
			} else {
				if _, ok := byID[p]; !ok {
					t.Errorf("span %s (%s) has a parent %s not in the trace", s.SpanID, s.OperationName, p)
				}
				children[p] = append(children[p], s)
			}
		}
		if len(roots) != 1 {
			t.Fatalf("%d root spans, want 1", len(roots))
		}
		wantPath := []struct{ service, kind string }{
			{"edge", "server"}, {"edge", "client"},
			{"frontend", "server"}, {"frontend", "client"}, // inbound
			{"frontend", "server"}, {"frontend", "client"}, // outbound
			{"orders", "server"}, {"orders", "client"},
		}
		s := roots[0]
		for i, want := range wantPath {
			t.Logf("hop %d: %s %s %q", i, service(s), s.tag("span.kind"), s.OperationName)
			if service(s) != want.service || s.tag("span.kind") != want.kind {
				t.Fatalf("hop %d: span %q of %s (%s), want a %s span of %s", i, s.OperationName, service(s), s.tag("span.kind"), want.kind, want.service)
			}
			for _, k := range []string{"http.request.method", "url.path", "server.address", "meshgate.role", "meshgate.namespace",
				"meshgate.spiffe_id", "deployment.environment", "http.response.status_code"} {
				if s.tag(k) == "" {
					t.Errorf("hop %d (%s %s): no %s", i, want.service, want.kind, k)
				}
			}
			if s.tag("http.response.status_code") != "200" {
				t.Errorf("hop %d: status %q", i, s.tag("http.response.status_code"))
			}
			if want.kind == "server" {
				for _, k := range []string{"network.peer.address", "user_agent.original", "http.route", "meshgate.route"} {
					if s.tag(k) == "" {
						t.Errorf("hop %d (%s server): no %s", i, want.service, k)
					}
				}
			} else {
				for _, k := range []string{"meshgate.destination", "meshgate.upstream.endpoint"} {
					if s.tag(k) == "" {
						t.Errorf("hop %d (%s client): no %s", i, want.service, k)
					}
				}
			}
			if i == len(wantPath)-1 {
				break
			}
			kids := children[s.SpanID]
			if len(kids) != 1 {
				t.Fatalf("hop %d (%s): %d children, want 1", i, s.OperationName, len(kids))
			}
			s = kids[0]
		}
		if got := s.SpanID; !strings.Contains(traceparent, got) {
			t.Errorf("orders got traceparent %s, not the span %s of the last hop", traceparent, got)
		}
		// The gateway's role, the sidecars' identities.
		if r, id := roots[0].tag("meshgate.role"), roots[0].tag("meshgate.spiffe_id"); r != "gateway" || !strings.HasSuffix(id, "/svc/edge") {
			t.Errorf("gateway span: role %q, identity %q", r, id)
		}
		for _, sp := range tr.Spans {
			if service(sp) == "orders" && sp.tag("span.kind") == "server" {
				if id := sp.tag("meshgate.peer.spiffe_id"); !strings.HasSuffix(id, "/svc/frontend") {
					t.Errorf("orders inbound span: peer identity %q, want the frontend's", id)
				}
			}
		}
	})

	t.Run("incoming traceparent is continued", func(t *testing.T) {
		traceID, parentSpan := randomHex(t, 16), randomHex(t, 8)
		tp, err := call("traceparent: 00-" + traceID + "-" + parentSpan + "-01")
		if err != nil {
			t.Fatal(err)
		}
		if traceIDOf(tp) != traceID {
			t.Fatalf("orders got trace %s, want the incoming %s", traceIDOf(tp), traceID)
		}
		tr := wholeTrace(t, j, traceID)
		found := false
		for _, s := range tr.Spans {
			if s.parent() == parentSpan {
				found = true
			}
		}
		if !found {
			t.Fatalf("no span of trace %s is a child of the incoming span %s", traceID, parentSpan)
		}
	})

	t.Run("proxies count exported spans", func(t *testing.T) {
		for name, admin := range m.admins() {
			var stats struct {
				Tracing struct {
					Exported uint64 `json:"spans_exported"`
					Dropped  uint64 `json:"spans_dropped"`
				} `json:"tracing"`
			}
			eventually(t, 10*time.Second, name+" exported spans", func() error {
				if err := adminGet(admin, "", "/stats", &stats); err != nil {
					return err
				}
				if stats.Tracing.Exported == 0 {
					return fmt.Errorf("no span exported")
				}
				return nil
			})
		}
	})

	t.Run("sampling 0 exports nothing, applied without a restart", func(t *testing.T) {
		c.policy("tracing.yaml", tracingPolicy(j.otlpGRPC, "grpc", 0))
		// The gateway decides for the whole trace: the flag orders sees.
		var unsampled []string
		eventually(t, 15*time.Second, "sampling 0 in effect", func() error {
			tp, err := call()
			if err != nil {
				return err
			}
			if !strings.HasSuffix(tp, "-00") {
				return fmt.Errorf("traceparent %s still sampled", tp)
			}
			unsampled = append(unsampled, traceIDOf(tp))
			return nil
		})
		for range 5 {
			tp, err := call()
			if err != nil {
				t.Fatal(err)
			}
			unsampled = append(unsampled, traceIDOf(tp))
		}
		// A sampled parent is still followed: once its trace is whole in
		// Jaeger, every span ended before it was exported too.
		marker := randomHex(t, 16)
		if _, err := call("traceparent: 00-" + marker + "-" + randomHex(t, 8) + "-01"); err != nil {
			t.Fatal(err)
		}
		wholeTrace(t, j, marker)
		for _, id := range unsampled {
			if tr, err := j.trace(id); !errors.Is(err, errTraceNotFound) {
				n := 0
				if tr != nil {
					n = len(tr.Spans)
				}
				t.Errorf("unsampled trace %s: %d spans in jaeger (%v)", id, n, err)
			}
		}
		if slices.Contains(unsampled, marker) {
			t.Fatal("marker trace among the unsampled")
		}
	})

	t.Run("OTLP over HTTP", func(t *testing.T) {
		c.policy("tracing.yaml", tracingPolicy(j.otlpHTTP, "http", 100))
		// Sampled again: the gateway has the new configuration, and exports
		// its spans over OTLP/HTTP (the gRPC exporter would not sample).
		var traceparent string
		eventually(t, 15*time.Second, "sampling 100 over OTLP/HTTP in effect", func() error {
			tp, err := call()
			if err != nil {
				return err
			}
			if !strings.HasSuffix(tp, "-01") {
				return fmt.Errorf("traceparent %s not sampled yet", tp)
			}
			traceparent = tp
			return nil
		})
		wholeTrace(t, j, traceIDOf(traceparent))
	})
	t.Run("collector down: requests unaffected, spans dropped and counted, export resumes", func(t *testing.T) {
		c.policy("tracing.yaml", tracingPolicy(j.otlpGRPC, "grpc", 100))
		// Every proxy exports over OTLP/gRPC before the trace is picked, so
		// that the collector being down below is seen by the new exporters.
		// (A request in flight during the swap keeps its spans: the old
		// exporter sends them to the OTLP/HTTP port it had, as
		// TestTracingSwapLosesNoSpan in dataplane counts.)
		for name, admin := range m.admins() {
			eventually(t, 15*time.Second, name+" exports over OTLP/gRPC", func() error {
				resp, err := client.Get("http://" + admin + "/config_dump")
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				dump, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				if !strings.Contains(string(dump), "envoyGrpc") && !strings.Contains(string(dump), "envoy_grpc") {
					return fmt.Errorf("no envoy_grpc tracing in its configuration")
				}
				return nil
			})
		}
		var traceparent string
		eventually(t, 15*time.Second, "sampling 100 over OTLP/gRPC in effect", func() error {
			tp, err := call()
			if err != nil {
				return err
			}
			if !strings.HasSuffix(tp, "-01") {
				return fmt.Errorf("traceparent %s not sampled yet", tp)
			}
			traceparent = tp
			return nil
		})
		wholeTrace(t, j, traceIDOf(traceparent))
		gatewayAdmin := m.admins()["gateway"]
		dropped := func() uint64 {
			var stats struct {
				Tracing struct {
					Dropped uint64 `json:"spans_dropped"`
				} `json:"tracing"`
			}
			if err := adminGet(gatewayAdmin, "", "/stats", &stats); err != nil {
				t.Fatal(err)
			}
			return stats.Tracing.Dropped
		}
		before := dropped()

		// The latency of the calls with the collector up and down is
		// logged, not asserted (a loaded machine's timings are noise); the
		// export never runs on a request's path: the spans are queued and
		// dropped when the queue is full, as counted below.
		const requests = 20
		timed := func(what string) []time.Duration {
			took := make([]time.Duration, 0, requests)
			for i := range requests {
				start := time.Now()
				if _, err := call(); err != nil {
					t.Fatalf("request %d %s: %v", i, what, err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			return took
		}
		up := timed("with the collector up")
		j.stop()
		down := timed("with the collector down")
		t.Logf("call latency (gateway → 2 sidecars → 2 apps), p50/max: collector up %v/%v, down %v/%v",
			up[requests/2], up[requests-1], down[requests/2], down[requests-1])
		eventually(t, 15*time.Second, "the gateway counts dropped spans", func() error {
			if d := dropped(); d < before+2*requests {
				return fmt.Errorf("%d spans dropped, want at least %d", d-before, 2*requests)
			}
			return nil
		})

		j.start()
		// Each try is a new trace; export has resumed once one is whole.
		var sent []string
		eventually(t, 20*time.Second, "export resumed", func() error {
			tp, err := call()
			if err != nil {
				return err
			}
			sent = append(sent, traceIDOf(tp))
			for _, id := range sent {
				if tr, err := j.trace(id); err == nil && len(tr.Spans) == spansPerCall {
					return nil
				}
			}
			return fmt.Errorf("none of %d traces whole in jaeger", len(sent))
		})
	})
}
