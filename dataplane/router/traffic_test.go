package router

import (
	"math"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	p := &RetryPolicy{BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	tests := []struct {
		retry  int
		rnd    uint64
		want   time.Duration
		reason string
	}{
		{1, 0, 100 * time.Millisecond, "the first retry waits at least the base"},
		{1, math.MaxUint64, 200*time.Millisecond - 1, "and less than twice it"},
		{2, 0, 200 * time.Millisecond, "the second at least twice the base"},
		{3, 1 << 63, 600 * time.Millisecond, "the third from [400ms, 800ms)"},
		{4, 0, 800 * time.Millisecond, "the fourth from [800ms, 1.6s), capped"},
		{4, math.MaxUint64, time.Second, "capped at the max interval"},
		{30, 0, time.Second, "never more than the max interval"},
	}
	for _, tt := range tests {
		if got := p.Backoff(tt.retry, tt.rnd); got != tt.want {
			t.Errorf("Backoff(%d, %#x) = %v, want %v: %s", tt.retry, tt.rnd, got, tt.want, tt.reason)
		}
	}
}

func TestCompileTraffic(t *testing.T) {
	t.Parallel()
	good := &routev3.RouteAction{
		RetryPolicy: &routev3.RetryPolicy{RetryOn: "connect-failure,reset,retriable-status-codes", RetriableStatusCodes: []uint32{500},
			NumRetries: wrapperspb.UInt32(3), PerTryTimeout: durationpb.New(time.Second),
			RetryBackOff:       &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(100 * time.Millisecond)},
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}},
		RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m", RuntimeFraction: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 333333, Denominator: typev3.FractionalPercent_MILLION}}}},
	}
	rt := &Route{}
	if err := compileTraffic(rt, good); err != nil {
		t.Fatal(err)
	}
	p := rt.Retry()
	if p.Retries != 3 || p.PerTryTimeout != time.Second || p.BaseBackoff != 100*time.Millisecond || p.MaxBackoff != time.Second ||
		!p.OtherHost || p.HostSelectionAttempts != 1 || !p.RetriesStatus(500) || p.RetriesStatus(503) ||
		!p.RetriesConnectFailure() || !p.RetriesReset() {
		t.Errorf("retry policy = %+v", p)
	}
	if m := rt.Mirrors(); len(m) != 1 || !m[0].Mirrors(333332) || m[0].Mirrors(333333) {
		t.Errorf("mirrors = %+v", m)
	}

	bad := []struct {
		ra   *routev3.RouteAction
		want string
	}{
		{&routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(11)}}, "retry_policy.num_retries: 11 is more than 10"},
		{&routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx,retriable-4xx"}}, `retry_policy.retry_on: condition "retriable-4xx" not supported`},
		{&routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(0)}}}, "retry_policy.retry_back_off.base_interval"},
		{&routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}}, "retry_policy.retry_back_off.max_interval"},
		{&routev3.RouteAction{RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{{}}}, "request_mirror_policies[0].cluster: required"},
	}
	for _, tt := range bad {
		if err := compileTraffic(&Route{}, tt.ra); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("compileTraffic(%v) = %v, want %q", tt.ra, err, tt.want)
		}
	}
}
