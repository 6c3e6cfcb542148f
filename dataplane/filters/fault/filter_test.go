package fault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func percent(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func abortHTTP(status uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: p}
}

func delay(d time.Duration, p *typev3.FractionalPercent) *faultcommonv3.FaultDelay {
	return &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: p}
}

var hundred = percent(100, typev3.FractionalPercent_HUNDRED)

// newTestFilter compiles cfg as the listener-level config of an entry
// called "fault", with a deterministic random source: 0, 1, 2, ...
func newTestFilter(t *testing.T, cfg *faultv3.HTTPFault) (*filter, *httpfilter.Stats) {
	t.Helper()
	if err := checker(t).Check(cfg); err != nil {
		t.Fatalf("Check: %v", err)
	}
	stats := new(httpfilter.Stats)
	f, err := newFilter("fault", cfg, httpfilter.Env{Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	ff := f.(*filter)
	var n uint64
	ff.rnd = func() uint64 { n++; return n - 1 }
	return ff, stats
}

func checker(t testing.TB) *xdscheck.Checker {
	t.Helper()
	f := Factory()
	c, err := xdscheck.New(f.Subset())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve runs one request through f on rt; the terminal answers 200 "ok".
func serve(f *filter, rt *router.Route, r *http.Request) (*httptest.ResponseRecorder, bool) {
	reached := false
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		reached = true
		_, _ = w.Write([]byte("ok"))
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r, rt)
	return w, reached
}

// TestSubset: the fault filter's subset accepts delays, HTTP and gRPC
// aborts and header matchers, and NACKs what it does not implement.
func TestSubset(t *testing.T) {
	t.Parallel()
	c := checker(t)
	tests := []struct {
		name string
		cfg  *faultv3.HTTPFault
		want string // "" accepted
	}{
		{name: "delay and abort", cfg: &faultv3.HTTPFault{Delay: delay(time.Second, hundred), Abort: abortHTTP(503, hundred),
			Headers: []*routev3.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}},
		{name: "grpc abort", cfg: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}}}},
		{name: "header abort", cfg: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}},
			want: "abort.header_abort: not supported"},
		{name: "header delay", cfg: &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}}}},
			want: "delay.header_delay: not supported"},
		{name: "max active faults", cfg: &faultv3.HTTPFault{MaxActiveFaults: nil, UpstreamCluster: "c"},
			want: "upstream_cluster: not supported"},
		{name: "runtime key", cfg: &faultv3.HTTPFault{AbortPercentRuntime: "k"}, want: "abort_percent_runtime: not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Check(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check = %v, want accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestAbort: an HTTP abort answers its status with Envoy's body; a gRPC
// abort answers 200 with grpc-status; neither reaches the upstream.
func TestAbort(t *testing.T) {
	t.Parallel()
	f, stats := newTestFilter(t, &faultv3.HTTPFault{Abort: abortHTTP(503, hundred)})
	w, reached := serve(f, nil, httptest.NewRequest("GET", "/", nil))
	if reached || w.Code != 503 || w.Body.String() != bodyAbort {
		t.Fatalf("abort: reached=%v status=%d body=%q", reached, w.Code, w.Body.String())
	}
	if got := stats.Snapshot()[StatFault][statAborts]; got != 1 {
		t.Errorf("aborts counted %d, want 1", got)
	}
	g, _ := newTestFilter(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: hundred}})
	w, reached = serve(g, nil, httptest.NewRequest("POST", "/svc/Method", nil))
	if reached || w.Code != 200 || w.Header().Get("Grpc-Status") != "14" || w.Header().Get("Content-Type") != "application/grpc" {
		t.Fatalf("grpc abort: reached=%v status=%d headers=%v", reached, w.Code, w.Header())
	}
}

// TestPercentages: a fault applies to numerator out of denominator
// requests, for every denominator; unset is 0%, over 100% is 100%.
func TestPercentages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    *typev3.FractionalPercent
		want int // aborts out of 10000
	}{
		{"25 percent", percent(25, typev3.FractionalPercent_HUNDRED), 2500},
		{"1 in 10000", percent(1, typev3.FractionalPercent_TEN_THOUSAND), 1},
		{"12.5 percent in millionths", percent(125_000, typev3.FractionalPercent_MILLION), 1250},
		{"unset", nil, 0},
		{"over 100", percent(150, typev3.FractionalPercent_HUNDRED), 10000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, _ := newTestFilter(t, &faultv3.HTTPFault{Abort: abortHTTP(500, tc.p)})
			// 10000 random numbers spread evenly over the denominator.
			step := uint64(1)
			if tc.p.GetDenominator() == typev3.FractionalPercent_MILLION {
				step = 100
			}
			var n uint64
			f.rnd = func() uint64 { n += step; return n - step }
			aborted := 0
			for range 10000 {
				if _, reached := serve(f, nil, httptest.NewRequest("GET", "/", nil)); !reached {
					aborted++
				}
			}
			if aborted != tc.want {
				t.Errorf("aborted %d of 10000, want %d", aborted, tc.want)
			}
		})
	}
}

// TestHeaders: with header matchers, only the requests whose headers all
// match get the fault.
func TestHeaders(t *testing.T) {
	t.Parallel()
	f, _ := newTestFilter(t, &faultv3.HTTPFault{Abort: abortHTTP(503, hundred), Headers: []*routev3.HeaderMatcher{
		{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "on"}}}},
		{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}},
	}})
	for _, tc := range []struct {
		method, chaos string
		aborted       bool
	}{{"GET", "on", true}, {"GET", "off", false}, {"GET", "", false}, {"POST", "on", false}} {
		r := httptest.NewRequest(tc.method, "/", nil)
		if tc.chaos != "" {
			r.Header.Set("X-Chaos", tc.chaos)
		}
		if _, reached := serve(f, nil, r); reached == tc.aborted {
			t.Errorf("%s x-chaos=%q: reached upstream %v, want aborted %v", tc.method, tc.chaos, reached, tc.aborted)
		}
	}
}

// TestDelay: a delayed request reaches the upstream after exactly
// fixed_delay (virtual time), then the abort roll applies; a client that
// goes away during the delay ends the request.
func TestDelay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f, stats := newTestFilter(t, &faultv3.HTTPFault{Delay: delay(3*time.Second, hundred)})
		start := time.Now()
		w, reached := serve(f, nil, httptest.NewRequest("GET", "/", nil))
		if !reached || w.Code != 200 {
			t.Fatalf("delayed request: reached=%v status=%d", reached, w.Code)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("delay %v, want 3s", got)
		}
		if got := stats.Snapshot()[StatFault][statDelays]; got != 1 {
			t.Errorf("delays counted %d, want 1", got)
		}

		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		start = time.Now()
		_, reached = serve(f, nil, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
		if reached || time.Since(start) != time.Second {
			t.Errorf("client gone after 1s: reached=%v after %v", reached, time.Since(start))
		}
	})
}

// perRouteCompiler compiles HTTPFault per-route values with the factory,
// as the registry does for the proxy.
type perRouteCompiler struct{}

func (perRouteCompiler) CompilePerFilterConfig(_ string, config *anypb.Any) (any, error) {
	var per faultv3.HTTPFault
	if err := config.UnmarshalTo(&per); err != nil {
		return nil, errors.New("want an HTTPFault")
	}
	return Factory().NewPerRoute(&per)
}

// TestPerRoute: a route's HTTPFault replaces the listener's (the virtual
// host's applies to its routes without one; an empty one disables the
// faults), as Envoy's most specific typed_per_filter_config does.
func TestPerRoute(t *testing.T) {
	t.Parallel()
	anyOf := func(cfg *faultv3.HTTPFault) map[string]*anypb.Any {
		a, err := anypb.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]*anypb.Any{"fault": a}
	}
	route := func(path string, per map[string]*anypb.Any) *routev3.Route {
		return &routev3.Route{
			Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
			Action:               &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}},
			TypedPerFilterConfig: per,
		}
	}
	table, err := router.Compile(&routev3.RouteConfiguration{Name: "rc", VirtualHosts: []*routev3.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		TypedPerFilterConfig: anyOf(&faultv3.HTTPFault{Abort: abortHTTP(418, hundred)}),
		Routes: []*routev3.Route{
			route("/route", anyOf(&faultv3.HTTPFault{Abort: abortHTTP(429, hundred)})),
			route("/off", anyOf(&faultv3.HTTPFault{})),
			route("/vhost", nil),
		},
	}}}, perRouteCompiler{})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := newTestFilter(t, &faultv3.HTTPFault{Abort: abortHTTP(503, hundred)})
	for path, want := range map[string]int{"/route": 429, "/off": 200, "/vhost": 418} {
		r := httptest.NewRequest("GET", path, nil)
		w, _ := serve(f, table.Match(r), r)
		if w.Code != want {
			t.Errorf("%s: status %d, want %d", path, w.Code, want)
		}
	}
	// No route matched: the listener's config.
	if w, _ := serve(f, nil, httptest.NewRequest("GET", "/none", nil)); w.Code != 503 {
		t.Errorf("no route: status %d, want 503", w.Code)
	}
}

// TestNoFaultAllocatesNothing: a request the faults do not apply to costs
// no allocation.
func TestNoFaultAllocatesNothing(t *testing.T) {
	f, _ := newTestFilter(t, &faultv3.HTTPFault{Abort: abortHTTP(503, hundred), Headers: []*routev3.HeaderMatcher{
		{Name: "x-chaos", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}})
	h := f.Wrap(httpfilter.HandlerFunc(func(http.ResponseWriter, *http.Request, *router.Route) {}))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r, nil) }); n != 0 {
		t.Errorf("%v allocations per request without a fault, want 0", n)
	}
}
