package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// The load balancer policies the proxy implements
// (envoy.config.cluster.v3.Cluster.LbPolicy).
const (
	enumLeastRequest = 1
	enumRingHash     = 2
	enumRandom       = 3
	enumMaglev       = 5
)

// The lb configs of a Cluster, one per policy.
const (
	clusterType      protoreflect.FullName = "envoy.config.cluster.v3.Cluster"
	routeActionType  protoreflect.FullName = "envoy.config.route.v3.RouteAction"
	retryPolicyType  protoreflect.FullName = "envoy.config.route.v3.RetryPolicy"
	hashPolicyType   protoreflect.FullName = "envoy.config.route.v3.RouteAction.HashPolicy"
	maxHashPolicies                        = 1
	maxRetryMatchers                       = 16
)

// trafficSubset is what the TrafficPolicy load balancing, timeouts and
// retries add (docs/xds.md, "Load balancing"): the message types of their
// own. extendTraffic adds their fields to the core messages.
func trafficSubset() Rules {
	return Rules{
		"envoy.config.cluster.v3.Cluster.RoundRobinLbConfig":   Allow("slow_start_config"),
		"envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": Allow("choice_count", "slow_start_config"),
		"envoy.config.cluster.v3.Cluster.SlowStartConfig":      Allow("slow_start_window").Requires("slow_start_window"),
		// The hash function is xxHash, the default (0).
		"envoy.config.cluster.v3.Cluster.RingHashLbConfig": Allow("minimum_ring_size", "maximum_ring_size").
			With("hash_function", Field{Enums: []protoreflect.EnumNumber{0}}),
		"envoy.config.cluster.v3.Cluster.MaglevLbConfig":                    Allow("table_size"),
		"google.protobuf.UInt64Value":                                       Allow("value"),
		hashPolicyType:                                                      Allow("header", "cookie", "connection_properties"),
		"envoy.config.route.v3.RouteAction.HashPolicy.Header":               Allow("header_name").Requires("header_name"),
		"envoy.config.route.v3.RouteAction.HashPolicy.Cookie":               Allow("name", "ttl", "path").Requires("name"),
		"envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties": Allow("source_ip"),
	}
}

// extendTraffic adds the load balancing, timeout and retry fields to the
// core rules of Cluster, RouteAction, RetryPolicy and the upstream
// HttpProtocolOptions.
func extendTraffic(subset Rules) {
	subset[clusterType].
		With("lb_policy", Field{Enums: []protoreflect.EnumNumber{enumRoundRobin, enumLeastRequest, enumRingHash, enumRandom, enumMaglev}}).
		With("round_robin_lb_config", Field{}).
		With("least_request_lb_config", Field{}).
		With("ring_hash_lb_config", Field{}).
		With("maglev_lb_config", Field{}).
		CheckedBy(checkLbConfig)
	subset[upstreamOptionsType].With("common_http_protocol_options", Field{})
	subset[routeActionType].
		With("hash_policy", Field{MaxItems: maxHashPolicies}).
		With("idle_timeout", Field{})
	subset[retryPolicyType].With("retriable_request_headers", Field{MaxItems: maxRetryMatchers})
}

// extendTrafficVirtualHost adds the attempt count fields to a VirtualHost
// rule (made by New, as it depends on the filters).
func extendTrafficVirtualHost(vh *Message) {
	vh.With("include_request_attempt_count", Field{}).
		With("include_attempt_count_in_response", Field{})
}

// checkLbConfig requires an lb config to be the lb_policy's.
func checkLbConfig(m protoreflect.Message) []Violation {
	fields := m.Descriptor().Fields()
	policy := m.Get(fields.ByName("lb_policy")).Enum()
	want := map[protoreflect.Name]protoreflect.EnumNumber{
		"round_robin_lb_config":   enumRoundRobin,
		"least_request_lb_config": enumLeastRequest,
		"ring_hash_lb_config":     enumRingHash,
		"maglev_lb_config":        enumMaglev,
	}
	for name, p := range want {
		if m.Has(fields.ByName(name)) && p != policy {
			return []Violation{{Path: string(name), Reason: "does not match lb_policy"}}
		}
	}
	return nil
}
