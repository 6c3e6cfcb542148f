package xdscheck

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestResilienceSubset: circuit_breakers (one default-priority thresholds
// entry, retry budget), outlier_detection (5xx, gateway failures, success
// rate, failure percentage) and one HTTP or TCP health check are
// accepted; what the proxy does not implement is NACKed with its path.
func TestResilienceSubset(t *testing.T) {
	t.Parallel()
	httpCheck := func() *corev3.HealthCheck {
		return &corev3.HealthCheck{
			Timeout: durationpb.New(1e9), Interval: durationpb.New(5e9), IntervalJitter: durationpb.New(1e8),
			UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(1),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
				Path: "/healthz", Host: "orders", ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}},
			}},
		}
	}
	tests := []struct {
		name   string
		mutate func(c *clusterv3.Cluster)
		want   string // "" accepted
	}{
		{name: "circuit breakers", mutate: func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(10), MaxPendingRequests: wrapperspb.UInt32(5),
				MaxRequests: wrapperspb.UInt32(20), MaxRetries: wrapperspb.UInt32(3),
				RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
					BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(2)},
			}}}
		}},
		{name: "outlier detection", mutate: func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{
				Consecutive_5Xx: wrapperspb.UInt32(3), ConsecutiveGatewayFailure: wrapperspb.UInt32(2),
				EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100), Interval: durationpb.New(1e9),
				BaseEjectionTime: durationpb.New(3e10), MaxEjectionTime: durationpb.New(3e11),
				MaxEjectionPercent: wrapperspb.UInt32(50), EnforcingSuccessRate: wrapperspb.UInt32(100),
				SuccessRateMinimumHosts: wrapperspb.UInt32(3), SuccessRateRequestVolume: wrapperspb.UInt32(10),
				SuccessRateStdevFactor: wrapperspb.UInt32(1000), FailurePercentageThreshold: wrapperspb.UInt32(40),
				EnforcingFailurePercentage: wrapperspb.UInt32(100), FailurePercentageMinimumHosts: wrapperspb.UInt32(3),
				FailurePercentageRequestVolume: wrapperspb.UInt32(10),
			}
		}},
		{name: "http health check", mutate: func(c *clusterv3.Cluster) { c.HealthChecks = []*corev3.HealthCheck{httpCheck()} }},
		{name: "tcp health check", mutate: func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}},
		{name: "high priority thresholds", mutate: func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				Priority: corev3.RoutingPriority_HIGH}}}
		}, want: "circuit_breakers.thresholds[0].priority: value HIGH not supported"},
		{name: "two thresholds", mutate: func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}
		}, want: "circuit_breakers.thresholds"},
		{name: "track remaining", mutate: func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{TrackRemaining: true}}}
		}, want: "circuit_breakers.thresholds[0].track_remaining: not supported"},
		{name: "local origin split", mutate: func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true}
		}, want: "outlier_detection.split_external_local_origin_errors: not supported"},
		{name: "two health checks", mutate: func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{httpCheck(), httpCheck()}
		}, want: "health_checks"},
		{name: "no traffic interval", mutate: func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.NoTrafficInterval = durationpb.New(6e10)
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, want: "health_checks[0].no_traffic_interval: not supported"},
		{name: "tcp payload", mutate: func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
				Send: &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "50494E47"}}}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, want: "health_checks[0].tcp_health_check.send: not supported"},
		{name: "grpc health check", mutate: func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{}}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, want: "health_checks[0].grpc_health_check: not supported"},
		{name: "http check request headers", mutate: func(c *clusterv3.Cluster) {
			hc := httpCheck()
			hc.GetHttpHealthCheck().RequestHeadersToRemove = []string{"x"}
			c.HealthChecks = []*corev3.HealthCheck{hc}
		}, want: "health_checks[0].http_health_check.request_headers_to_remove: not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := fullCluster(t, true)
			tc.mutate(c)
			err := Check(c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check() = %v, want accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
