package httpproxy

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/dataplane/peer"
	"github.com/meshgate/meshgate/dataplane/rbac"
)

const (
	idFrontend = "spiffe://meshgate.local/ns/default/svc/frontend"
	idOther    = "spiffe://meshgate.local/ns/default/svc/other"
)

func rbacPolicy(perm *rbacconfigv3.Permission, prin *rbacconfigv3.Principal) *rbacconfigv3.Policy {
	return &rbacconfigv3.Policy{Permissions: []*rbacconfigv3.Permission{perm}, Principals: []*rbacconfigv3.Principal{prin}}
}

func anyPerm() *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
}

func anyPrin() *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
}

func pathPrefixPerm(p string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}}}}}
}

func methodPerm(m string) *rbacconfigv3.Permission {
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{
		Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m}}}}}}
}

func identityPrin(id string) *rbacconfigv3.Principal {
	return &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{Authenticated: &rbacconfigv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}}}}
}

func rbacConfig(action rbacconfigv3.RBAC_Action, statPrefix string, policies map[string]*rbacconfigv3.Policy) *rbacv3.RBAC {
	return &rbacv3.RBAC{RulesStatPrefix: statPrefix, Rules: &rbacconfigv3.RBAC{Action: action, Policies: policies}}
}

func compileRBAC(t *testing.T, cfg *rbacv3.RBAC) *rbac.Filter {
	t.Helper()
	f, err := rbac.Compile(cfg)
	if err != nil {
		t.Fatalf("rbac.Compile: %v", err)
	}
	return f
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

func TestRBACEnforcement(t *testing.T) {
	t.Parallel()
	cfg := &Config{
		Routes: table(t,
			directOK(t, "/orders", nil),
			directOK(t, "/admin/users", nil),
			// The ALLOW filter is disabled here: anyone may call /public.
			directOK(t, "/public", map[string]proto.Message{rbac.AllowFilterName: &rbacv3.RBACPerRoute{}}),
			// The DENY filter is replaced here: DELETE is denied, /admin is not.
			directOK(t, "/admin/strict", map[string]proto.Message{rbac.DenyFilterName: &rbacv3.RBACPerRoute{
				Rbac: rbacConfig(rbacconfigv3.RBAC_DENY, "default/strict", map[string]*rbacconfigv3.Policy{
					"default/strict/no-delete": rbacPolicy(methodPerm("DELETE"), anyPrin()),
				}),
			}}),
			// Both replaced by configs without rules: nothing enforced.
			directOK(t, "/admin/open", map[string]proto.Message{
				rbac.DenyFilterName:  &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}},
				rbac.AllowFilterName: &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{}},
			}),
		),
		RBACDeny: compileRBAC(t, rbacConfig(rbacconfigv3.RBAC_DENY, "default/orders-callers", map[string]*rbacconfigv3.Policy{
			"default/orders-callers/no-admin": rbacPolicy(pathPrefixPerm("/admin"), anyPrin()),
		})),
		RBACAllow: compileRBAC(t, rbacConfig(rbacconfigv3.RBAC_ALLOW, "default/orders-callers", map[string]*rbacconfigv3.Policy{
			"default/orders-callers/1": rbacPolicy(anyPerm(), identityPrin(idFrontend)),
		})),
	}

	tests := []struct {
		name, method, path, identity string
		wantStatus                   int
		wantBody                     string
		wantStat                     string // the counter incremented, "" for none
		wantLog                      []string
	}{
		{name: "allowed identity", path: "/orders", identity: idFrontend, wantStatus: 200, wantBody: "ok\n"},
		{name: "other identity: no allow match", path: "/orders", identity: idOther, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match",
			wantLog:  []string{"level=INFO", "msg=\"access denied\"", "method=GET", "path=/orders", "peer=" + idOther, "remote_ip=192.0.2.1", "policy=no-allow-match", "rules=default/orders-callers"}},
		{name: "plaintext: no allow match", path: "/orders", wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match", wantLog: []string{"peer=\"\"", "policy=no-allow-match"}},
		{name: "deny wins over allow", path: "/admin/users", identity: idFrontend, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-admin", wantLog: []string{"policy=default/orders-callers/no-admin", "action=DENY"}},
		{name: "allow disabled on route", path: "/public", wantStatus: 200, wantBody: "ok\n"},
		{name: "deny overridden on route: GET passes", path: "/admin/strict", identity: idFrontend, wantStatus: 200, wantBody: "ok\n"},
		{name: "deny overridden on route: DELETE denied", method: "DELETE", path: "/admin/strict", identity: idFrontend, wantStatus: 403,
			wantBody: "access denied\n", wantStat: "default/strict/no-delete", wantLog: []string{"policy=default/strict/no-delete", "method=DELETE"}},
		{name: "deny overridden on route: allow still applies", path: "/admin/strict", identity: idOther, wantStatus: 403,
			wantBody: "access denied\n", wantStat: "default/orders-callers/no-allow-match"},
		{name: "rule-less overrides enforce nothing", path: "/admin/open", wantStatus: 200, wantBody: "ok\n"},
		{name: "no route: listener RBAC before 404", path: "/nowhere", wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-allow-match"},
		{name: "no route allowed: 404", path: "/nowhere", identity: idFrontend, wantStatus: 404, wantBody: "no route\n"},
		{name: "no route denied path", path: "/admin/nowhere", identity: idFrontend, wantStatus: 403, wantBody: "access denied\n",
			wantStat: "default/orders-callers/no-admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			h := NewHandler(slog.New(slog.NewTextHandler(&logs, nil)))
			h.Store(cfg)
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
			snap := h.RBACStats().Snapshot()
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
			for _, want := range tc.wantLog {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log %q does not contain %q", logs.String(), want)
				}
			}
		})
	}
}

func TestRBACCounterIsCumulativeAcrossStores(t *testing.T) {
	t.Parallel()
	denyAll := &Config{
		Routes:    table(t, directOK(t, "/x", nil)),
		RBACAllow: compileRBAC(t, rbacConfig(rbacconfigv3.RBAC_ALLOW, "", nil)), // ALLOW without policies: deny all
	}
	h, base := startProxy(t, denyAll, false)
	for range 3 {
		if resp := get(t, base+"/x"); resp.status != http.StatusForbidden || resp.body != "access denied\n" {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
	}
	h.Store(&Config{Routes: denyAll.Routes, RBACAllow: denyAll.RBACAllow})
	_ = get(t, base+"/x")
	if got := h.RBACStats().Get(rbac.NoAllowMatch); got != 4 {
		t.Fatalf("counter = %d, want 4", got)
	}
	h.Store(&Config{Routes: denyAll.Routes}) // RBAC removed
	if resp := get(t, base+"/x"); resp.status != http.StatusOK {
		t.Fatalf("without RBAC: %d %q", resp.status, resp.body)
	}
}

func BenchmarkRBACAllowed(b *testing.B) {
	f, err := rbac.Compile(rbacConfig(rbacconfigv3.RBAC_ALLOW, "p", map[string]*rbacconfigv3.Policy{
		"p/0": rbacPolicy(pathPrefixPerm("/orders"), identityPrin(idFrontend)),
	}))
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(nil)
	h.Store(&Config{Routes: table(b, directOK(b, "/orders", nil)), RBACAllow: f})
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r = r.WithContext(peer.WithIdentity(r.Context(), idFrontend))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
	}
}
