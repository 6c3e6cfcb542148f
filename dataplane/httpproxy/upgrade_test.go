package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/metrics"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// newWebSocketEcho starts a WebSocket backend (github.com/coder/websocket)
// that echoes every message; a request to /refuse gets 404 "no socket here"
// instead of an upgrade.
func newWebSocketEcho(t testing.TB) string {
	t.Helper()
	srv := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no socket here", http.StatusNotFound)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept answered (426 without the upgrade headers)
		}
		defer c.CloseNow()
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	return addrOf(srv)
}

// denyPath is a real RBAC filter denying the paths with prefix p.
func denyPath(t testing.TB, p string) httpfilter.Filter {
	t.Helper()
	cfg := &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_DENY, Policies: map[string]*rbacconfigv3.Policy{
		"no-sockets": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}},
			}}}},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
		},
	}}}
	f, err := rbac.Factory().New("envoy.filters.http.rbac", cfg, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// echoOnce dials a WebSocket at url, sends a text and a binary message and
// checks that both come back; it returns the dial's HTTP response on error.
func echoOnce(ctx context.Context, url string) (*http.Response, error) {
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return resp, err
	}
	defer c.CloseNow()
	for _, m := range []struct {
		typ  websocket.MessageType
		data string
	}{{websocket.MessageText, "Websocket Support!"}, {websocket.MessageBinary, "\x01\x02\x03\x00\xff"}} {
		if err := c.Write(ctx, m.typ, []byte(m.data)); err != nil {
			return resp, fmt.Errorf("write: %w", err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return resp, fmt.Errorf("read: %w", err)
		}
		if typ != m.typ || string(got) != m.data {
			return resp, fmt.Errorf("echo = %v %q, want %v %q", typ, got, m.typ, m.data)
		}
	}
	return resp, c.Close(websocket.StatusNormalClosure, "")
}

// TestWebSocketUpgrade: with upgrade_configs websocket, an upgrade request
// goes through the route and the filters (an RBAC deny answers 403) and, on
// 101, the connections are spliced (a real WebSocket echoes); a refusal
// (non-101) comes back as it is; without upgrade_configs, or on a route
// that disables them, the Upgrade header is removed (the backend answers
// 426).
func TestWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	backend := newWebSocketEcho(t)
	disabled := &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "ws"},
		UpgradeConfigs:   []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}},
	}}
	enabled := &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "ws"},
		UpgradeConfigs:   []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "WebSocket"}},
	}}
	config := func(webSocket bool) *Config {
		return &Config{
			Routes: table(t,
				&routev3.Route{Match: prefix("/off"), Action: disabled},
				&routev3.Route{Match: prefix("/on"), Action: enabled},
				&routev3.Route{Match: prefix("/"), Action: forwardTo("ws")},
			),
			Clusters:  map[string]*upstream.Cluster{"ws": clusterFor(t, "ws", false, backend)},
			Filters:   []httpfilter.Filter{denyPath(t, "/denied")},
			WebSocket: webSocket,
		}
	}
	_, on := startProxy(t, config(true), false)
	_, off := startProxy(t, config(false), false)
	tests := []struct {
		name, url  string
		wantStatus int    // 0: the echo works
		wantBody   string // of a refusal
	}{
		{name: "echo", url: on + "/ws"},
		{name: "denied by RBAC", url: on + "/denied/ws", wantStatus: http.StatusForbidden, wantBody: "access denied\n"},
		{name: "refused by the backend", url: on + "/refuse", wantStatus: http.StatusNotFound, wantBody: "no socket here\n"},
		{name: "disabled on the route", url: on + "/off", wantStatus: http.StatusUpgradeRequired},
		{name: "not configured", url: off + "/ws", wantStatus: http.StatusUpgradeRequired},
		{name: "enabled on the route only", url: off + "/on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := echoOnce(ctx, strings.Replace(tc.url, "http://", "ws://", 1))
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("echo: %v", err)
				}
				if resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("status %d, want 101", resp.StatusCode)
				}
				return
			}
			if err == nil {
				t.Fatal("the upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != tc.wantStatus {
				t.Fatalf("dial: %v (response %+v), want status %d", err, resp, tc.wantStatus)
			}
			if tc.wantBody != "" {
				body, _ := io.ReadAll(resp.Body)
				if string(body) != tc.wantBody {
					t.Errorf("body %q, want %q", body, tc.wantBody)
				}
			}
		})
	}
}

// upgradeRequest is a WebSocket upgrade request head for path.
func upgradeRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
}

// TestUpgradeHalfClose: after 101, a client that half-closes its side
// still gets what the backend sends after reading to the end, then the
// end of the stream: each direction's end is passed on as a half-close.
// The WebSocket is one access log line, status 101, with the bytes it
// carried each way.
func TestUpgradeHalfClose(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		if err := brw.Flush(); err != nil {
			return
		}
		got, err := io.ReadAll(brw)
		if err != nil {
			return
		}
		fmt.Fprintf(conn, "got %q", got)
	})
	path := filepath.Join(t.TempDir(), "access.log")
	logs, logw := accessLogTo(t, path, testFields)
	reg := prometheus.NewPedanticRegistry()
	m := metrics.NewProxy(reg)
	routes := table(t, &routev3.Route{Name: "ws", Match: prefix("/"), Action: forwardTo("c")})
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:     routes,
		Clusters:   map[string]*upstream.Cluster{"c": clusterFor(t, "c", false, addrOf(backend))},
		WebSocket:  true,
		AccessLogs: logs,
		Metrics:    m.Listener("edge", routes),
	})
	served := make(chan struct{}, 1)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		served <- struct{}{}
	}))
	t.Cleanup(proxy.Close)
	conn, err := net.Dial("tcp", proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, upgradeRequest("/x")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("response %d %v, want 101 with Upgrade: websocket", resp.StatusCode, resp.Header)
	}
	if _, err := io.WriteString(conn, "abc"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	if string(got) != `got "abc"` {
		t.Fatalf("got %q, want %q", got, `got "abc"`)
	}
	<-served
	lines := readLines(t, logw, path)
	if len(lines) != 1 {
		t.Fatalf("%d access log lines, want 1", len(lines))
	}
	want := map[string]any{"route": "ws", "response_code": 101.0, "bytes_received": 3.0, "bytes_sent": float64(len(got)), "upstream_cluster": "c"}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("access log %s = %v, want %v (line %v)", k, lines[0][k], v, lines[0])
		}
	}
	wantMetrics := `
# HELP meshgate_proxy_requests_total Requests served, by listener, route, destination cluster and response code class.
# TYPE meshgate_proxy_requests_total counter
meshgate_proxy_requests_total{cluster="c",code_class="1xx",listener="edge",route="ws"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantMetrics), "meshgate_proxy_requests_total"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			if labelValue(s.GetLabel(), "route") == "ws" && s.GetHistogram() != nil {
				sizes[f.GetName()] = s.GetHistogram().GetSampleSum()
			}
		}
	}
	if sizes["meshgate_proxy_request_size_bytes"] != 3 || sizes["meshgate_proxy_response_size_bytes"] != float64(len(got)) {
		t.Errorf("request and response sizes %v, want 3 and %d", sizes, len(got))
	}
}

// TestTunnelIdleTimeout: a tunnel ends when nothing passed either way for
// its idle timeout, not before; traffic one way keeps it open (virtual
// time: testing/synctest).
func TestTunnelIdleTimeout(t *testing.T) {
	const idle = time.Minute
	tests := []struct {
		name string
		// pings: a byte client→backend every idle/2, this many times.
		pings    int
		wantOpen time.Duration // how long the tunnel lasts
	}{
		{name: "silent", pings: 0, wantOpen: idle},
		{name: "one way busy", pings: 6, wantOpen: 3*idle + idle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := NewHandler(nil)
				client, down := net.Pipe()
				up, backend := net.Pipe()
				go func() { _, _ = io.Copy(io.Discard, backend) }()
				start := time.Now()
				done := make(chan struct{})
				tun := &tunnel{idle: idle}
				go func() {
					defer close(done)
					tun.splice(h, &tunnelEnd{conn: down, r: down}, &tunnelEnd{conn: up, r: up})
				}()
				for range tc.pings {
					time.Sleep(idle / 2)
					if _, err := client.Write([]byte{1}); err != nil {
						t.Fatalf("write at %v: %v", time.Since(start), err)
					}
				}
				<-done
				if got := time.Since(start); got != tc.wantOpen {
					t.Errorf("tunnel lasted %v, want %v", got, tc.wantOpen)
				}
				if !tun.timedOut.Load() {
					t.Error("not recorded as an idle timeout")
				}
				if _, err := client.Write([]byte{1}); !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("client write after the timeout: %v, want the pipe closed", err)
				}
				_ = backend.Close()
			})
		})
	}
}

// TestWebSocketUpgradeRequest: which requests are WebSocket upgrades.
func TestWebSocketUpgradeRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		proto      string
		connection []string
		upgrade    []string
		body       string
		want       bool
	}{
		{name: "upgrade", proto: "HTTP/1.1", connection: []string{"Upgrade"}, upgrade: []string{"websocket"}, want: true},
		{name: "any case, tokens", proto: "HTTP/1.1", connection: []string{"keep-alive", "x, UPGRADE"}, upgrade: []string{"WebSocket, other"}, want: true},
		{name: "HTTP/1.0", proto: "HTTP/1.0", connection: []string{"Upgrade"}, upgrade: []string{"websocket"}},
		{name: "no Connection upgrade", proto: "HTTP/1.1", connection: []string{"keep-alive"}, upgrade: []string{"websocket"}},
		{name: "h2c", proto: "HTTP/1.1", connection: []string{"Upgrade"}, upgrade: []string{"h2c"}},
		{name: "websocket not first", proto: "HTTP/1.1", connection: []string{"Upgrade"}, upgrade: []string{"h2c, websocket"}},
		{name: "with a body", proto: "HTTP/1.1", connection: []string{"Upgrade"}, upgrade: []string{"websocket"}, body: "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := httptest.NewRequest("GET", "http://a/ws", body)
			r.Proto = tc.proto
			r.ProtoMajor, r.ProtoMinor, _ = http.ParseHTTPVersion(tc.proto)
			r.Header["Connection"], r.Header["Upgrade"] = tc.connection, tc.upgrade
			if got := webSocketUpgrade(r); got != tc.want {
				t.Errorf("webSocketUpgrade = %v, want %v", got, tc.want)
			}
		})
	}
}
