package globalratelimit

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/dataplane/filters/localratelimit"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// routeWith is the route "/" of a route configuration whose one route has
// per as the filter's per-route config.
func routeWith(per *ratelimitv3.RateLimitPerRoute) (*router.Route, error) {
	typed, err := anypb.New(per)
	if err != nil {
		return nil, err
	}
	table, err := router.Compile(&routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action:               &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
			TypedPerFilterConfig: map[string]*anypb.Any{"rl": typed},
		}},
	}}}, perRouteCompiler{})
	if err != nil {
		return nil, err
	}
	return table.Match(httptest.NewRequest(http.MethodGet, "/", nil)), nil
}

// perRouteCompiler compiles RateLimitPerRoute configs.
type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	msg, err := config.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	return newPerRoute(msg)
}

// fakeService answers with resp or err, and records the requests.
type fakeService struct {
	resp *rlsv3.RateLimitResponse
	err  error
	got  []*rlsv3.RateLimitRequest
}

func (f *fakeService) ShouldRateLimit(_ context.Context, in *rlsv3.RateLimitRequest, _ ...grpc.CallOption) (*rlsv3.RateLimitResponse, error) {
	f.got = append(f.got, in)
	return f.resp, f.err
}

func config(deny bool) *ratelimitv3.RateLimit {
	return &ratelimitv3.RateLimit{
		Domain: "meshgate", FailureModeDeny: deny, Timeout: durationpb.New(time.Second),
		EnableXRatelimitHeaders: ratelimitv3.RateLimit_DRAFT_VERSION_03, EnableRetryAfterHeader: true,
		RateLimitService: &ratelimitconfigv3.RateLimitServiceConfig{
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{
				GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "127.0.0.1:1", StatPrefix: "ratelimit"}}},
		},
	}
}

func perRouteConfig() *ratelimitv3.RateLimitPerRoute {
	return &ratelimitv3.RateLimitPerRoute{RateLimits: []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{
		{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: "limit", DescriptorValue: "3/Minute"}}},
		{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: "x-client", DescriptorKey: "header"}}},
	}}}}
}

// handlerWith is the filter in front of a 200 handler on a route with
// perRouteConfig, asking fake.
func handlerWith(t *testing.T, deny bool, fake *fakeService, stats *httpfilter.Stats) (httpfilter.Handler, *router.Route) {
	t.Helper()
	self, local := Factory(), localratelimit.Factory()
	c, err := xdscheck.New(self.Subset(), local.Subset())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(config(deny)); err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := c.Check(perRouteConfig()); err != nil {
		t.Fatalf("check per route: %v", err)
	}
	f, err := newFilter("rl", config(deny), httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	f.(*filter).client = fake
	per, err := newPerRoute(perRouteConfig())
	if err != nil {
		t.Fatal(err)
	}
	_ = per
	rt, err := routeWith(perRouteConfig())
	if err != nil {
		t.Fatal(err)
	}
	return f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		w.WriteHeader(http.StatusOK)
	})), rt
}

func status(code rlsv3.RateLimitResponse_Code, remaining uint32) *rlsv3.RateLimitResponse {
	return &rlsv3.RateLimitResponse{OverallCode: code, Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
		Code: code, LimitRemaining: remaining, DurationUntilReset: durationpb.New(30 * time.Second),
		CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 3, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE},
	}}}
}

// TestGlobal: the service's answer decides (OK: next, with the headers;
// OVER_LIMIT: 429 with x-envoy-ratelimited and Retry-After); a service
// that fails lets the request through, or answers 500 with
// failure_mode_deny, counted either way; a request without the key asks
// nothing.
func TestGlobal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		deny       bool
		fake       *fakeService
		header     bool
		wantStatus int
		wantHeader map[string]string
		wantStats  map[string]uint64
		wantAsked  int
		// auth: the request's authentication; wantConsumers: then
		// consumer_rate_limited (nil: not checked).
		auth          *httpfilter.Auth
		wantConsumers map[string]uint64
	}{
		{name: "ok", fake: &fakeService{resp: status(rlsv3.RateLimitResponse_OK, 2)}, header: true, wantStatus: 200, wantAsked: 1,
			wantHeader: map[string]string{"X-RateLimit-Limit": "3, 3;w=60", "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "30",
				"RateLimit-Policy": `"global";q=3;w=60`, "RateLimit": `"global";r=2;t=30`}},
		{name: "over limit", fake: &fakeService{resp: status(rlsv3.RateLimitResponse_OVER_LIMIT, 0)}, header: true, wantStatus: 429, wantAsked: 1,
			wantHeader: map[string]string{"X-Envoy-Ratelimited": "true", "Retry-After": "30", "X-RateLimit-Remaining": "0"},
			wantStats:  map[string]uint64{statOverLimit: 1}},
		{name: "over limit, a declared consumer", auth: &httpfilter.Auth{Kind: httpfilter.AuthJWT, Principal: "svc-billing", Consumer: "billing"},
			fake: &fakeService{resp: status(rlsv3.RateLimitResponse_OVER_LIMIT, 0)}, header: true, wantStatus: 429, wantAsked: 1,
			wantStats: map[string]uint64{statOverLimit: 1}, wantConsumers: map[string]uint64{"jwt/billing": 1}},
		{name: "over limit, an undeclared subject", auth: &httpfilter.Auth{Kind: httpfilter.AuthJWT, Principal: "user-1"},
			fake: &fakeService{resp: status(rlsv3.RateLimitResponse_OVER_LIMIT, 0)}, header: true, wantStatus: 429, wantAsked: 1,
			wantStats: map[string]uint64{statOverLimit: 1}, wantConsumers: map[string]uint64{}},
		{name: "ok, a declared consumer", auth: &httpfilter.Auth{Kind: httpfilter.AuthAPIKey, Principal: "acme", Consumer: "acme"},
			fake: &fakeService{resp: status(rlsv3.RateLimitResponse_OK, 2)}, header: true, wantStatus: 200, wantAsked: 1,
			wantConsumers: map[string]uint64{}},
		{name: "service down, allow", fake: &fakeService{err: errors.New("unavailable")}, header: true, wantStatus: 200, wantAsked: 1,
			wantStats: map[string]uint64{statError: 1, statAllowed: 1}},
		{name: "service down, deny", deny: true, fake: &fakeService{err: errors.New("unavailable")}, header: true, wantStatus: 500, wantAsked: 1,
			wantStats: map[string]uint64{statError: 1, statAllowed: 0}},
		{name: "no key", fake: &fakeService{err: errors.New("not asked")}, wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stats := new(httpfilter.Stats)
			h, rt := handlerWith(t, tc.deny, tc.fake, stats)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tc.header {
				r.Header.Set("X-Client", "c1")
			}
			if tc.auth != nil {
				r = r.WithContext(httpfilter.WithAuth(r.Context(), tc.auth))
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, rt)
			if w.Code != tc.wantStatus || len(tc.fake.got) != tc.wantAsked {
				t.Fatalf("status %d after %d requests to the service, want %d after %d", w.Code, len(tc.fake.got), tc.wantStatus, tc.wantAsked)
			}
			if tc.wantAsked > 0 {
				d := tc.fake.got[0].GetDescriptors()
				if tc.fake.got[0].GetDomain() != "meshgate" || len(d) != 1 || len(d[0].GetEntries()) != 2 ||
					d[0].GetEntries()[0].GetValue() != "3/Minute" || d[0].GetEntries()[1].GetKey() != "header" || d[0].GetEntries()[1].GetValue() != "c1" {
					t.Errorf("request to the service: %v", tc.fake.got[0])
				}
			}
			for k, v := range tc.wantHeader {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for k, v := range tc.wantStats {
				if got := stats.Counters(StatRateLimit).Get(k); got != v {
					t.Errorf("stats %s = %d, want %d", k, got, v)
				}
			}
			if got := stats.Counters(httpfilter.StatConsumerRateLimited).Snapshot(); tc.wantConsumers != nil && !maps.Equal(got, tc.wantConsumers) {
				t.Errorf("consumer_rate_limited = %v, want %v", got, tc.wantConsumers)
			}
		})
	}
}
