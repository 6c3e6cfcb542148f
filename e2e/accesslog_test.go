package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// accessLine is one access-log line with the control plane's default
// fields.
type accessLine map[string]any

func (l accessLine) str(k string) string {
	s, _ := l[k].(string)
	return s
}

func (l accessLine) code() int {
	f, _ := l["response_code"].(float64)
	return int(f)
}

// accessLines reads the JSON lines of path, failing on one that does not
// parse.
func accessLines(path string) ([]accessLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []accessLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l accessLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("line %q does not parse: %w", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out, nil
}

// waitLines waits until path has the lines match selects, at least n, and
// returns them.
func waitLines(t *testing.T, path string, n int, what string, match func(accessLine) bool) []accessLine {
	t.Helper()
	var got []accessLine
	eventually(t, 15*time.Second, what, func() error {
		all, err := accessLines(path)
		if err != nil {
			return err
		}
		got = got[:0]
		for _, l := range all {
			if match(l) {
				got = append(got, l)
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d lines, want %d", len(got), n)
		}
		return nil
	})
	return got
}

// TestAccessLogThroughTheMesh: with MeshConfig spec.accessLog (every proxy
// appending to one file) and tracing on, a request gateway → frontend →
// orders is one JSON line per hop, each with the trace id Jaeger shows,
// its status, route and upstream; a request the orders' SecurityPolicy
// denies is a 403 line naming the rule; a request to a dead endpoint is a
// 503 line flagged UF.
func TestAccessLogThroughTheMesh(t *testing.T) {
	t.Parallel()
	j := startJaeger(t)
	c := newCluster(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.policy("mesh.yaml", yamlDocs(meshPolicy(), staticServices("ghost"), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ghost}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /ghost}}]
      backendRefs: [{name: ghost, port: 80}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: orders-guard}
spec:
  targetRefs: [{kind: Service, name: orders}]
  rules:
    - name: no-admin
      action: DENY
      to: [{paths: ["/admin/*"]}]
`))
	c.addr("ghost") // a free port nobody listens on
	c.policy("observability.yaml", tracingPolicy(j.otlpGRPC, "grpc", 100)+fmt.Sprintf("  accessLog: {path: %q}\n", logFile))
	c.startControlPlane()
	m := startMesh(c, c.sidecar, []string{"frontend", "orders"})

	t.Run("one line per hop, with the trace id Jaeger shows", func(t *testing.T) {
		var traceID string
		eventually(t, 15*time.Second, "a call through the mesh", func() error {
			r, err := get(m.gw+"/call/orders/items", "User-Agent: accesslog-e2e")
			if err != nil {
				return err
			}
			if r.reply.UpstreamStatus != http.StatusOK || r.reply.Upstream == nil {
				return fmt.Errorf("status %d, upstream %d", r.status, r.reply.UpstreamStatus)
			}
			traceID = traceIDOf(r.reply.Upstream.Headers["traceparent"])
			if traceID == "" {
				return fmt.Errorf("no traceparent at orders")
			}
			return nil
		})
		lines := waitLines(t, logFile, 4, "the call's lines", func(l accessLine) bool { return l.str("trace_id") == traceID })
		if len(lines) != 4 {
			t.Fatalf("%d lines with trace id %s, want 4 (gateway, frontend inbound and outbound, orders inbound)", len(lines), traceID)
		}
		byProxy := map[string]int{}
		for _, l := range lines {
			t.Logf("%s %s route %q → %s (%s) %d %s", l.str("role"), l.str("proxy"), l.str("route"), l.str("upstream_host"), l.str("upstream_cluster"), l.code(), l.str("response_flags"))
			byProxy[l.str("proxy")]++
			if l.code() != 200 || l.str("response_flags") != "-" || l.str("response_code_details") != "via_upstream" {
				t.Errorf("line %v: want 200, no flags, via_upstream", l)
			}
			if l.str("route") == "" || l.str("upstream_host") == "" || l.str("upstream_cluster") == "" || l.str("method") != "GET" {
				t.Errorf("line %v: no route, upstream or method", l)
			}
			if _, ok := l["duration"].(float64); !ok {
				t.Errorf("line %v: no duration", l)
			}
		}
		if byProxy["default/edge"] != 1 || byProxy["default/frontend"] != 2 || byProxy["default/orders"] != 1 {
			t.Errorf("lines by proxy %v", byProxy)
		}
		for _, l := range lines {
			switch {
			case l.str("role") == "gateway":
				if l.str("path") != "/call/orders/items" || !strings.HasPrefix(l.str("route"), "default/edge/") || l.str("upstream_cluster") != "default/frontend:80" {
					t.Errorf("gateway line %v", l)
				}
			case l.str("proxy") == "default/orders":
				if l.str("path") != "/items" || !strings.HasSuffix(l.str("peer"), "/svc/frontend") {
					t.Errorf("orders line %v: want path /items from the frontend's identity", l)
				}
			}
		}
		// Jaeger shows the same trace.
		if tr := wholeTrace(t, j, traceID); tr.TraceID != traceID {
			t.Errorf("jaeger trace %s, want %s", tr.TraceID, traceID)
		}
	})

	t.Run("a denied request names the rule", func(t *testing.T) {
		r, err := get(m.gw + "/call/orders/admin/users")
		if err != nil {
			t.Fatal(err)
		}
		if r.reply.UpstreamStatus != http.StatusForbidden {
			t.Fatalf("frontend's call got %d, want 403", r.reply.UpstreamStatus)
		}
		lines := waitLines(t, logFile, 1, "the denial's line", func(l accessLine) bool {
			return l.str("proxy") == "default/orders" && l.str("path") == "/admin/users"
		})
		l := lines[0]
		if l.code() != 403 || !strings.Contains(l.str("denied_by"), "no-admin") ||
			!strings.HasPrefix(l.str("response_code_details"), "rbac_access_denied_matched_policy[") || l["upstream_host"] != nil {
			t.Errorf("denial line %v: want 403, denied_by the no-admin rule, no upstream", l)
		}
	})

	t.Run("a dead upstream is UF", func(t *testing.T) {
		c.expectEventually("ghost routed", 10*time.Second, m.gw+"/ghost", nil, func(r *response) error {
			if r.status != http.StatusServiceUnavailable {
				return fmt.Errorf("status %d, want 503", r.status)
			}
			return nil
		})
		lines := waitLines(t, logFile, 1, "the dead upstream's line", func(l accessLine) bool {
			return l.str("role") == "gateway" && l.str("path") == "/ghost" && l.code() == 503
		})
		l := lines[0]
		if l.str("response_flags") != "UF" || l.str("upstream_host") != c.addr("ghost") || l.str("upstream_cluster") != "default/ghost:80" {
			t.Errorf("dead upstream line %v: want UF to %s", l, c.addr("ghost"))
		}
	})
}
