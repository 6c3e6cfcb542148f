package extauthz

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// fakeService answers check requests as an authorization service would,
// recording them: the proxy's clusters are tested end to end (e2e).
type fakeService struct {
	answer func(r *http.Request) (*http.Response, error)
	seen   []*http.Request
	bodies []string
}

func (f *fakeService) RoundTrip(cluster string, r *http.Request, timeout time.Duration) (*http.Response, error) {
	if cluster != "authz" || timeout != 2*time.Second {
		return nil, errors.New("wrong cluster or timeout")
	}
	body := ""
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		body = string(b)
	}
	f.seen, f.bodies = append(f.seen, r), append(f.bodies, body)
	return f.answer(r)
}

func answer(status int, body string, headers ...string) func(*http.Request) (*http.Response, error) {
	return func(*http.Request) (*http.Response, error) {
		h := http.Header{}
		for _, kv := range headers {
			k, v, _ := strings.Cut(kv, ": ")
			h.Add(k, v)
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}, nil
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}, IgnoreCase: true}
}

// config is the ExtAuthz the tests use, changed by edit.
func config(edit func(*extauthzv3.ExtAuthz)) *extauthzv3.ExtAuthz {
	cfg := &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		AllowedHeaders:      &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{exact("x-api-key")}},
		Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{Uri: "http://authz", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "authz"},
				Timeout: durationpb.New(2 * time.Second)},
			PathPrefix: "/check",
			AuthorizationResponse: &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders: &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{exact("x-user")}},
			},
		}},
	}
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var p extauthzv3.ExtAuthzPerRoute
	if err := config.UnmarshalTo(&p); err != nil {
		return nil, err
	}
	return newPerRoute(&p)
}

// routes are /checked (the filter enabled), /open (disabled) and /plain
// (no per-route config: enabled, as in Envoy).
func routes(t *testing.T) *router.Table {
	t.Helper()
	per := func(p *extauthzv3.ExtAuthzPerRoute) map[string]*anypb.Any {
		a, err := anypb.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]*anypb.Any{"authz": a}
	}
	route := func(prefix string, p map[string]*anypb.Any) *routev3.Route {
		return &routev3.Route{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
			Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			TypedPerFilterConfig: p,
		}
	}
	rc := &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
		route("/checked", per(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{}}})),
		route("/open", per(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}})),
		route("/plain", nil),
	}}}}
	tbl, err := router.Compile(rc, perRouteCompiler{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// upstreamSeen is the next handler: it answers 200 with what it saw.
type upstreamSeen struct {
	called bool
	header http.Header
	body   string
}

func (u *upstreamSeen) ServeHTTP(w http.ResponseWriter, r *http.Request, _ *router.Route) {
	u.called, u.header = true, r.Header.Clone()
	b, _ := io.ReadAll(r.Body)
	u.body = string(b)
	w.WriteHeader(http.StatusOK)
}

func TestFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		edit     func(*extauthzv3.ExtAuthz)
		answer   func(*http.Request) (*http.Response, error)
		path     string
		headers  []string
		body     string
		status   int
		upstream bool              // the request reached next
		toUp     map[string]string // headers next saw
		toClient map[string]string // headers of the client's answer
		clientBody,
		checkPath, checkBody string
		checks int
		stat   string
	}{
		{name: "allowed: the allowed answer headers set on the request", path: "/checked/a?b=1",
			headers: []string{"X-Api-Key: k", "X-Secret: s", "Authorization: Bearer t"},
			answer:  answer(200, "", "X-User: alice", "X-Other: no", "Content-Length: 0", "Host: evil"),
			status:  200, upstream: true, toUp: map[string]string{"X-User": "alice", "X-Other": ""},
			checkPath: "/check/checked/a?b=1", checks: 1, stat: StatOK},
		{name: "denied: the service's status, headers and body", path: "/checked",
			answer: answer(401, "go away", "WWW-Authenticate: Basic", "X-Reason: r", "Host: evil"),
			status: 401, toClient: map[string]string{"WWW-Authenticate": "Basic", "X-Reason": "r", "Host": "", "Content-Length": "7"},
			clientBody: "go away", checkPath: "/check/checked", checks: 1, stat: StatDenied},
		{name: "denied: allowed_client_headers", path: "/checked",
			edit: func(c *extauthzv3.ExtAuthz) {
				c.GetHttpService().AuthorizationResponse.AllowedClientHeaders = &matcherv3.ListStringMatcher{Patterns: []*matcherv3.StringMatcher{exact("x-reason")}}
			},
			answer: answer(403, "", "WWW-Authenticate: Basic", "X-Reason: r", "X-Not: n"),
			status: 403, toClient: map[string]string{"WWW-Authenticate": "Basic", "X-Reason": "r", "X-Not": ""},
			checkPath: "/check/checked", checks: 1, stat: StatDenied},
		{name: "no per-route config: checked", path: "/plain",
			answer: answer(500, "down"), status: 500, clientBody: "down", checkPath: "/check/plain", checks: 1, stat: StatDenied},
		{name: "disabled on the route: not checked", path: "/open",
			answer: answer(403, ""), status: 200, upstream: true},
		{name: "failure closed: 403", path: "/checked",
			answer: func(*http.Request) (*http.Response, error) { return nil, errors.New("timeout") },
			status: 403, checkPath: "/check/checked", checks: 1, stat: StatError},
		{name: "failure closed: status_on_error", path: "/checked",
			edit: func(c *extauthzv3.ExtAuthz) {
				c.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
			},
			answer: func(*http.Request) (*http.Response, error) { return nil, errors.New("timeout") },
			status: 503, checkPath: "/check/checked", checks: 1, stat: StatError},
		{name: "failure open: allowed and counted", path: "/checked",
			edit:   func(c *extauthzv3.ExtAuthz) { c.FailureModeAllow = true },
			answer: func(*http.Request) (*http.Response, error) { return nil, errors.New("timeout") },
			status: 200, upstream: true, checkPath: "/check/checked", checks: 1, stat: StatFailureModeAllowed},
		{name: "body: the first bytes to the service, all of it upstream", path: "/checked", body: "0123456789abcdef",
			edit: func(c *extauthzv3.ExtAuthz) {
				c.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 4, AllowPartialMessage: true}
			},
			answer: answer(200, ""), status: 200, upstream: true,
			checkPath: "/check/checked", checkBody: "0123", checks: 1, stat: StatOK},
		{name: "body: too long without partial messages: 413", path: "/checked", body: "0123456789abcdef",
			edit:   func(c *extauthzv3.ExtAuthz) { c.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 4} },
			answer: answer(200, ""), status: 413, stat: StatDenied},
		{name: "body: not sent without with_request_body", path: "/checked", body: "0123456789abcdef",
			answer: answer(200, ""), status: 200, upstream: true, checkPath: "/check/checked", checks: 1, stat: StatOK},
	}
	tbl := routes(t)
	factory := Factory()
	checker, err := xdscheck.New(factory.Subset())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := config(tt.edit)
			if err := checker.Check(cfg); err != nil {
				t.Fatalf("the config is outside the subset: %v", err)
			}
			stats := new(httpfilter.Stats)
			f, err := newFilter("authz", cfg, httpfilter.Env{Stats: stats})
			if err != nil {
				t.Fatal(err)
			}
			svc := &fakeService{answer: tt.answer}
			up := &upstreamSeen{}
			h := f.(httpfilter.UpstreamFilter).WrapUpstreams(up, svc)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			r := httptest.NewRequest(http.MethodPost, "http://orders.example"+tt.path, body)
			for _, kv := range tt.headers {
				k, v, _ := strings.Cut(kv, ": ")
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, tbl.Match(r))

			if w.Code != tt.status || up.called != tt.upstream {
				t.Fatalf("status %d, upstream called %v; want %d, %v", w.Code, up.called, tt.status, tt.upstream)
			}
			if len(svc.seen) != tt.checks {
				t.Fatalf("%d checks, want %d", len(svc.seen), tt.checks)
			}
			if tt.checks > 0 {
				cr := svc.seen[0]
				if cr.URL.RequestURI() != tt.checkPath || cr.Method != http.MethodPost || cr.Host != "orders.example" || svc.bodies[0] != tt.checkBody {
					t.Errorf("check request %s %s host %q body %q; want POST %s, orders.example, %q", cr.Method, cr.URL.RequestURI(), cr.Host, svc.bodies[0], tt.checkPath, tt.checkBody)
				}
				for _, k := range []string{"X-Api-Key", "Authorization"} {
					if cr.Header.Get(k) != r.Header.Get(k) {
						t.Errorf("check request %s %q, want %q", k, cr.Header.Get(k), r.Header.Get(k))
					}
				}
				if cr.Header.Get("X-Secret") != "" {
					t.Errorf("check request has X-Secret: not allowed")
				}
			}
			if up.called && up.body != tt.body {
				t.Errorf("upstream body %q, want %q", up.body, tt.body)
			}
			for k, v := range tt.toUp {
				if got := up.header.Get(k); got != v {
					t.Errorf("upstream %s %q, want %q", k, got, v)
				}
			}
			for k, v := range tt.toClient {
				if got := w.Header().Get(k); got != v {
					t.Errorf("client %s %q, want %q", k, got, v)
				}
			}
			if tt.clientBody != "" && w.Body.String() != tt.clientBody {
				t.Errorf("client body %q, want %q", w.Body.String(), tt.clientBody)
			}
			if tt.stat != "" && stats.Snapshot()[StatFamily][tt.stat] != 1 {
				t.Errorf("stats %v, want one %s", stats.Snapshot()[StatFamily], tt.stat)
			}
		})
	}
}

// TestFilterDeniesGRPCWithStatus: a gRPC call denied gets a gRPC status.
func TestFilterDeniesGRPCWithStatus(t *testing.T) {
	t.Parallel()
	f, err := newFilter("authz", config(nil), httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	h := f.(httpfilter.UpstreamFilter).WrapUpstreams(&upstreamSeen{}, &fakeService{answer: answer(401, "no")})
	r := httptest.NewRequest(http.MethodPost, "http://orders.example/checked", nil)
	r.Header.Set("Content-Type", "application/grpc")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r, routes(t).Match(r))
	if w.Code != http.StatusOK || w.Header().Get("Grpc-Status") != "16" || w.Header().Get("Grpc-Message") != "no" {
		t.Errorf("%d %v; want 200 with grpc-status 16 (unauthenticated), grpc-message no", w.Code, w.Header())
	}
}
