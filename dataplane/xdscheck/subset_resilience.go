package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// enumPriorityDefault is envoy.config.core.v3.RoutingPriority.DEFAULT, the
// one priority the proxy has.
const enumPriorityDefault = 0

// resilienceSubset is the part of the subset that protects a cluster's
// endpoints (docs/xds.md, "Circuit breakers, outlier detection and health
// checks"): circuit_breakers with one thresholds entry of the default
// priority, outlier_detection with consecutive 5xx, consecutive gateway
// failures, success rate and failure percentage (no local-origin split),
// and one HTTP or TCP (connect only) health check.
func resilienceSubset() Rules {
	return Rules{
		"envoy.config.cluster.v3.CircuitBreakers": Allow().
			With("thresholds", Field{MaxItems: 1}),
		"envoy.config.cluster.v3.CircuitBreakers.Thresholds": Allow("max_connections", "max_pending_requests",
			"max_requests", "max_retries", "retry_budget").
			With("priority", Field{Enums: []protoreflect.EnumNumber{enumPriorityDefault}}),
		// budget_percent is an envoy.type.v3.Percent (its rule: subset_tracing.go).
		"envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": Allow("budget_percent", "min_retry_concurrency"),
		"envoy.config.cluster.v3.OutlierDetection": Allow("consecutive_5xx", "consecutive_gateway_failure",
			"interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent",
			"enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
			"enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume",
			"success_rate_stdev_factor", "failure_percentage_threshold", "enforcing_failure_percentage",
			"failure_percentage_minimum_hosts", "failure_percentage_request_volume"),
		"envoy.config.core.v3.HealthCheck": Allow("timeout", "interval", "interval_jitter",
			"unhealthy_threshold", "healthy_threshold", "http_health_check", "tcp_health_check").
			Requires("timeout", "interval", "unhealthy_threshold", "healthy_threshold"),
		"envoy.config.core.v3.HealthCheck.HttpHealthCheck": Allow("host", "path", "expected_statuses").
			Requires("path"),
		"envoy.type.v3.Int64Range": Allow("start", "end"),
		// A TCP check connects: no send, no receive.
		"envoy.config.core.v3.HealthCheck.TcpHealthCheck": Allow(),
	}
}
