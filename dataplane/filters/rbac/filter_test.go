package rbac

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/httpproxy"
	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
)

// perRouteCompiler compiles RBACPerRoute values with the factory, as the
// registry does for the proxy.
type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var per rbacv3.RBACPerRoute
	if err := config.UnmarshalTo(&per); err != nil {
		return nil, fmt.Errorf("want an RBACPerRoute: %w", err)
	}
	return Factory().NewPerRoute(&per)
}

func directOK(t testing.TB, path string, perFilter map[string]proto.Message) *routev3.Route {
	t.Helper()
	r := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok\n"}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-route", Value: path}}},
	}
	if perFilter != nil {
		r.TypedPerFilterConfig = make(map[string]*anypb.Any)
		for k, m := range perFilter {
			a, err := anypb.New(m)
			if err != nil {
				t.Fatal(err)
			}
			r.TypedPerFilterConfig[k] = a
		}
	}
	return r
}

func table(t testing.TB, routes ...*routev3.Route) *router.Table {
	t.Helper()
	tbl, err := router.Compile(&routev3.RouteConfiguration{Name: "test", VirtualHosts: []*routev3.VirtualHost{
		{Name: "all", Domains: []string{"*"}, Routes: routes},
	}}, perRouteCompiler{})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// newFilterT compiles the http_filters entry called name with cfg.
func newFilterT(t testing.TB, name string, cfg *rbacv3.RBAC, env httpfilter.Env) httpfilter.Filter {
	t.Helper()
	f, err := Factory().New(name, cfg, env)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

// TestRBACEnforcement runs the control plane's two filters (deny, then
// allow) before the router, with per-route overrides, through the proxy's
// request pipeline.
func TestRBACEnforcement(t *testing.T) {
	t.Parallel()
	routes := table(t,
		directOK(t, "/orders", nil),
		directOK(t, "/admin/users", nil),
		// The ALLOW filter is disabled here: anyone may call /public.
		directOK(t, "/public", map[string]proto.Message{allowFilterName: &rbacv3.RBACPerRoute{}}),
		// The DENY filter is replaced here: DELETE is denied, /admin is not.
		directOK(t, "/admin/strict", map[string]proto.Message{denyFilterName: &rbacv3.RBACPerRoute{
			Rbac: rbacConfig(rbacconfigv3.RBAC_DENY, "default/strict", map[string]*rbacconfigv3.Policy{
				"default/strict/no-delete": pol(permHeader(header(":method", exact("DELETE"))), prinAny()),
			}),
		}}),
		// Both replaced by configs without rules: nothing enforced.
		directOK(t, "/admin/open", map[string]proto.Message{
			denyFilterName:  &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}},
			allowFilterName: &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}},
		}),
	)
	denyCfg := rbacConfig(rbacconfigv3.RBAC_DENY, "default/orders-callers", map[string]*rbacconfigv3.Policy{
		"default/orders-callers/no-admin": pol(permPath(prefix("/admin")), prinAny()),
	})
	allowCfg := rbacConfig(rbacconfigv3.RBAC_ALLOW, "default/orders-callers", map[string]*rbacconfigv3.Policy{
		"default/orders-callers/1": pol(permAny(), prinID(exact(frontend))),
	})

	const other = "spiffe://meshgate.local/ns/default/svc/other"
	tests := []struct {
		name, method, path, identity string
		wantStatus                   int
		wantBody                     string
		wantStat                     string // the counter incremented, "" for none
		wantLog                      []string
	}{
		{name: "allowed identity", path: "/orders", identity: frontend, wantStatus: 200, wantBody: "ok\n"},
		{name: "other identity: no allow match", path: "/orders", identity: other, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match",
			wantLog:  []string{"level=INFO", "msg=\"access denied\"", "listener=inbound", "method=GET", "path=/orders", "peer=" + other, "remote_ip=192.0.2.1", "policy=no-allow-match", "rules=default/orders-callers"}},
		{name: "plaintext: no allow match", path: "/orders", wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match", wantLog: []string{"peer=\"\"", "policy=no-allow-match"}},
		{name: "deny wins over allow", path: "/admin/users", identity: frontend, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-admin", wantLog: []string{"policy=default/orders-callers/no-admin", "action=DENY"}},
		{name: "allow disabled on route", path: "/public", wantStatus: 200, wantBody: "ok\n"},
		{name: "deny overridden on route: GET passes", path: "/admin/strict", identity: frontend, wantStatus: 200, wantBody: "ok\n"},
		{name: "deny overridden on route: DELETE denied", method: "DELETE", path: "/admin/strict", identity: frontend, wantStatus: 403,
			wantBody: "access denied\n", wantStat: "default/strict/no-delete", wantLog: []string{"policy=default/strict/no-delete", "method=DELETE"}},
		{name: "deny overridden on route: allow still applies", path: "/admin/strict", identity: other, wantStatus: 403,
			wantBody: "access denied\n", wantStat: "default/orders-callers/no-allow-match"},
		{name: "rule-less overrides enforce nothing", path: "/admin/open", wantStatus: 200, wantBody: "ok\n"},
		{name: "no route: listener RBAC before 404", path: "/nowhere", wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match"},
		{name: "no route allowed: 404", path: "/nowhere", identity: frontend, wantStatus: 404, wantBody: "no route\n"},
		{name: "no route denied path", path: "/admin/nowhere", identity: frontend, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			env := httpfilter.Env{
				Logger: slog.New(slog.NewTextHandler(&logs, nil)).With("listener", "inbound"),
				Stats:  new(httpfilter.Stats),
			}
			h := httpproxy.NewHandler(nil)
			h.Store(&httpproxy.Config{Routes: routes, Filters: []httpfilter.Filter{
				newFilterT(t, denyFilterName, denyCfg, env),
				newFilterT(t, allowFilterName, allowCfg, env),
			}})
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, tc.path, nil)
			r.RemoteAddr = "192.0.2.1:40000"
			r = r.WithContext(peer.WithIdentity(r.Context(), tc.identity))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)

			if w.Code != tc.wantStatus || w.Body.String() != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Body.String(), tc.wantStatus, tc.wantBody)
			}
			snap := env.Stats.Counters(StatDenied).Snapshot()
			if tc.wantStat == "" {
				if len(snap) != 0 {
					t.Errorf("counters = %v, want none", snap)
				}
				if logs.Len() != 0 {
					t.Errorf("logged %q for an allowed request", logs.String())
				}
				return
			}
			if len(snap) != 1 || snap[tc.wantStat] != 1 {
				t.Errorf("counters = %v, want %s=1", snap, tc.wantStat)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q", ct)
			}
			if path := tc.path; w.Header().Get("X-Route") != path && tc.path != "/nowhere" && tc.path != "/admin/nowhere" {
				t.Errorf("the 403 lacks the route's response headers: %v", w.Header())
			}
			for _, want := range tc.wantLog {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log %q does not contain %q", logs.String(), want)
				}
			}
		})
	}
}

// TestDeniedCounterOutlivesConfigurations: the rbac_denied counters are the
// proxy's (Env.Stats), not a configuration's: a new config counts on.
func TestDeniedCounterOutlivesConfigurations(t *testing.T) {
	t.Parallel()
	env := httpfilter.Env{Stats: new(httpfilter.Stats)}
	denyAll := rules(rbacconfigv3.RBAC_ALLOW, nil) // ALLOW without policies: deny all
	routes := table(t, directOK(t, "/x", nil))
	h := httpproxy.NewHandler(nil)
	serve := func() int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
		return w.Code
	}
	h.Store(&httpproxy.Config{Routes: routes, Filters: []httpfilter.Filter{newFilterT(t, "a", denyAll, env)}})
	for range 3 {
		if code := serve(); code != http.StatusForbidden {
			t.Fatalf("status %d", code)
		}
	}
	h.Store(&httpproxy.Config{Routes: routes, Filters: []httpfilter.Filter{newFilterT(t, "b", denyAll, env)}})
	_ = serve()
	if got := env.Stats.Counters(StatDenied).Get(NoAllowMatch); got != 4 {
		t.Fatalf("counter = %d, want 4", got)
	}
	h.Store(&httpproxy.Config{Routes: routes}) // RBAC removed
	if code := serve(); code != http.StatusOK {
		t.Fatalf("without RBAC: %d", code)
	}
}

func rbacConfig(action rbacconfigv3.RBAC_Action, statPrefix string, policies map[string]*rbacconfigv3.Policy) *rbacv3.RBAC {
	cfg := rules(action, policies)
	cfg.RulesStatPrefix = statPrefix
	return cfg
}

// BenchmarkRBACAllowed is a request an ALLOW filter allows, through the
// proxy's pipeline to a direct response.
func BenchmarkRBACAllowed(b *testing.B) {
	f := newFilterT(b, allowFilterName, rbacConfig(rbacconfigv3.RBAC_ALLOW, "p", map[string]*rbacconfigv3.Policy{
		"p/0": pol(permPath(prefix("/orders")), prinID(exact(frontend))),
	}), httpfilter.Env{Stats: new(httpfilter.Stats)})
	h := httpproxy.NewHandler(nil)
	h.Store(&httpproxy.Config{Routes: table(b, directOK(b, "/orders", nil)), Filters: []httpfilter.Filter{f}})
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r = r.WithContext(peer.WithIdentity(r.Context(), frontend))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
	}
}

// TestDeniedRequestSpanNamesTheRule: a traced request that is denied has
// the rule that denied it on its server span, and its 403.
func TestDeniedRequestSpanNamesTheRule(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.NewWithExporter(&tracing.Settings{Service: "orders", Cluster: "c", Timeout: tracing.DefaultExportTimeout, Ratio: 1},
		exp, tracing.Options{}, nil)
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	deny := newFilterT(t, denyFilterName, rbacConfig(rbacconfigv3.RBAC_DENY, "default/orders-callers", map[string]*rbacconfigv3.Policy{
		"default/orders-callers/no-admin": pol(permPath(prefix("/admin")), prinAny()),
	}), httpfilter.Env{Stats: new(httpfilter.Stats)})
	h := httpproxy.NewHandler(nil)
	h.Store(&httpproxy.Config{Routes: table(t, directOK(t, "/orders", nil)), Filters: []httpfilter.Filter{deny}, Tracer: tr})
	for _, path := range []string{"/admin/users", "/orders"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for i, want := range []struct{ deniedBy, status string }{{"default/orders-callers/no-admin", "403"}, {"", "200"}} {
		got := map[string]string{}
		for _, kv := range spans[i].Attributes {
			got[string(kv.Key)] = kv.Value.String()
		}
		if got["meshgate.denied_by"] != want.deniedBy || got["http.response.status_code"] != want.status {
			t.Errorf("span %d: denied_by %q status %q, want %q %q", i, got["meshgate.denied_by"], got["http.response.status_code"], want.deniedBy, want.status)
		}
	}
}
