package policy

import (
	"strings"
	"testing"
)

// trafficBase is a Service with two ports, a Gateway and an HTTPRoute with
// a named rule: the targets of the TrafficPolicies under test.
const trafficBase = `apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{name: http, port: 80}, {name: admin, port: 9000}]
  endpoints: [{address: "127.0.0.1:8081", port: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: web, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
  - name: checkout
    backendRefs: [{group: meshgate.dev, kind: Service, name: orders, port: 80}]
---
`

// trafficPolicy is a TrafficPolicy document with the given targets and
// sections (YAML, indented by two spaces under spec).
func trafficPolicy(targets, sections string) string {
	return "apiVersion: meshgate.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: tp}\nspec:\n  targetRefs: " + targets + "\n" + sections
}

func TestTrafficPolicyValidation(t *testing.T) {
	t.Parallel()
	svc := `[{kind: Service, name: orders}]`
	tests := []struct {
		name, targets, sections string
		// want are substrings of the errors, each "line: field: message"
		// fragment; none: the policy is valid.
		want []string
	}{
		{"every section", svc, `  loadBalancer: {type: RingHash, hash: {cookie: {name: session, ttl: 1h, path: /}}}
  timeouts: {connect: 1s, request: 10s, perTry: 2s, idle: {upstream: 1m, downstream: 30s}}
  retry: {attempts: 3, retryOn: [5xx, retriable-status-codes], retriableStatusCodes: [503], backoff: {base: 25ms, max: 1s}, budget: {percent: 20, minConcurrency: 3}, methods: [GET, POST]}
  circuitBreaker: {maxConnections: 100, maxPendingRequests: 10, maxRequests: 100, maxRetries: 3}
  outlierDetection: {consecutive5xx: 5, consecutiveGatewayErrors: 3, successRate: {minHosts: 3, requestVolume: 100, stdevFactor: 1900}, failurePercentage: {threshold: 50, minHosts: 3, requestVolume: 50}, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  healthCheck: {http: {path: /healthz, host: orders.local, expectedStatuses: [200, 204]}, interval: 5s, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 3, jitter: 100ms}
  faultInjection: {delay: {fixed: 100ms, percent: 10}, abort: {httpStatus: 503, percent: 1.5}, onlyWithHeader: {name: x-chaos, value: "on"}}
`, nil},
		{"prefer local", svc, "  loadBalancer: {type: LeastRequest, locality: {preferLocal: true}}\n", nil},
		{"locality without preferLocal", svc, "  loadBalancer: {locality: {preferLocal: false}}\n", []string{"spec.loadBalancer.locality.preferLocal: must be true"}},
		{"request body limit", `[{kind: Gateway, name: edge}]`, "  bodyLimits: {maxRequestBytes: 1048576}\n", nil},
		{"response body limit", svc, "  bodyLimits: {maxRequestBytes: 1048576, maxResponseBytes: 4194304}\n", nil},
		{"response body limit alone", `[{kind: HTTPRoute, name: shop, sectionName: checkout}]`, "  bodyLimits: {maxResponseBytes: 1}\n", nil},
		{"body limits without a limit", svc, "  bodyLimits: {}\n", []string{"tp.yaml:6: spec.bodyLimits: bodyLimits needs maxRequestBytes, maxResponseBytes or both"}},
		{"body limits out of range", svc, "  bodyLimits: {maxRequestBytes: 0, maxResponseBytes: 1073741825}\n",
			[]string{"spec.bodyLimits.maxRequestBytes: 0 bytes: want 1 to 1073741824", "spec.bodyLimits.maxResponseBytes: 1073741825 bytes: want 1 to 1073741824"}},
		{"cache", `[{kind: HTTPRoute, name: shop}]`, "  cache: {ttl: 60s, staleWhileRevalidate: 30s, shared: true, queryParameters: [page], headers: [x-tenant], allowedVaryHeaders: [accept-encoding], maxEntryBytes: 65536, maxCacheBytes: 16777216}\n", nil},
		{"cache with defaults", `[{kind: Gateway, name: edge}]`, "  cache: {}\n", nil},
		{"cache out of range", svc, "  cache: {ttl: 10ms, maxEntryBytes: 0, maxCacheBytes: 4294967297, headers: [\"bad header\"], queryParameters: [\"\"]}\n",
			[]string{"spec.cache.ttl: 10ms is shorter than 1s", "spec.cache.maxEntryBytes: 0 bytes: want 1 to 67108864",
				"spec.cache.maxCacheBytes: 4294967297 bytes: want 1 to 4294967296", "spec.cache.headers[0]:", "spec.cache.queryParameters[0]: a name is required"}},
		{"route targets with route sections", `[{kind: Gateway, name: edge, sectionName: web}, {kind: HTTPRoute, name: shop, sectionName: checkout}]`,
			"  timeouts: {request: 5s}\n  retry: {attempts: 2}\n", nil},
		{"port section", `[{kind: Service, name: orders, sectionName: admin}]`, "  loadBalancer: {type: LeastRequest, slowStart: {window: 30s}}\n", nil},
		{"no sections", svc, "", []string{"tp.yaml:4: spec: a TrafficPolicy needs at least one of"}},
		{"no targets", "[]", "  timeouts: {request: 1s}\n", []string{"spec.targetRefs: at least one targetRef is required"}},
		{"unknown target", `[{kind: Service, name: nope}]`, "  timeouts: {request: 1s}\n", []string{`spec.targetRefs[0].name: service "nope" not found`}},
		{"unknown port", `[{kind: Service, name: orders, sectionName: grpc}]`, "  timeouts: {request: 1s}\n", []string{`spec.targetRefs[0].sectionName: service "orders" has no port named "grpc"`}},
		{"unknown listener", `[{kind: Gateway, name: edge, sectionName: tls}]`, "  timeouts: {request: 1s}\n", []string{`gateway "edge" has no listener named "tls"`}},
		{"unknown rule", `[{kind: HTTPRoute, name: shop, sectionName: cart}]`, "  timeouts: {request: 1s}\n", []string{`httproute "shop" has no rule named "cart"`}},
		{"cluster section on a gateway", `[{kind: Gateway, name: edge}]`, "  loadBalancer: {type: Random}\n  circuitBreaker: {maxRequests: 1}\n  timeouts: {connect: 1s}\n",
			[]string{"spec.loadBalancer: loadBalancer applies to Service targets only", "spec.circuitBreaker: circuitBreaker applies to Service targets only", "spec.timeouts.connect: timeouts.connect applies"}},
		{"unknown lb type", svc, "  loadBalancer: {type: Fastest}\n", []string{`spec.loadBalancer.type: unknown type "Fastest" (want RoundRobin, LeastRequest, Random, RingHash or Maglev)`}},
		{"ring hash without hash", svc, "  loadBalancer: {type: Maglev}\n", []string{"spec.loadBalancer.hash: type Maglev needs hash"}},
		{"hash on round robin", svc, "  loadBalancer: {hash: {sourceIP: true}}\n", []string{"hash applies to RingHash and Maglev only, not RoundRobin"}},
		{"two hashes", svc, "  loadBalancer: {type: RingHash, hash: {header: x-user, sourceIP: true}}\n", []string{"exactly one of header, cookie and sourceIP"}},
		{"bad durations", svc, "  timeouts: {request: 10 seconds, idle: {}}\n", []string{"spec.timeouts.request: invalid duration", "spec.timeouts.idle: idle needs upstream, downstream or both"}},
		{"bad retry", svc, "  retry: {attempts: 11, retryOn: [teapot, retriable-status-codes], methods: [FETCH], backoff: {base: 1s, max: 10ms}, budget: {percent: 0}}\n",
			[]string{"spec.retry.attempts: 11 attempts: want 0 to 10", `spec.retry.retryOn[0]: unknown condition "teapot"`, "retryOn retriable-status-codes needs retriableStatusCodes",
				`spec.retry.methods[0]: unknown method "FETCH"`, "spec.retry.backoff.max: max 10ms is shorter than base 1s", "spec.retry.budget.percent: percent 0"}},
		{"two per-try timeouts", svc, "  timeouts: {perTry: 1s}\n  retry: {perTryTimeout: 2s}\n", []string{"set timeouts.perTry or retry.perTryTimeout, not both"}},
		{"bad health check", svc, "  healthCheck: {http: {path: healthz}, tcp: {}, interval: 0s, timeout: 1s}\n",
			[]string{"spec.healthCheck: exactly one of http and tcp", `spec.healthCheck.http.path: invalid path "healthz"`, "spec.healthCheck.interval: 0s is shorter than 1ms"}},
		{"bad faults", svc, "  faultInjection: {abort: {httpStatus: 99, percent: 150}, onlyWithHeader: {name: x-chaos}}\n",
			[]string{"spec.faultInjection.abort.httpStatus: status 99", "spec.faultInjection.abort.percent: percent 150", "spec.faultInjection.onlyWithHeader.value: value is required"}},
		{"bad limits", svc, "  bodyLimits: {maxRequestBytes: 0}\n", []string{"spec.bodyLimits.maxRequestBytes: 0 bytes"}},
		{"bad circuit breaker", svc, "  circuitBreaker: {maxConnections: 0}\n", []string{"spec.circuitBreaker.maxConnections: 0: want 1 or more"}},
		{"unknown field", svc, "  retry: {attempt: 3}\n", []string{"attempt"}},
		{"rate limits", `[{kind: HTTPRoute, name: shop, sectionName: checkout}]`, `  rateLimit:
    local:
      maxKeys: 500
      rules:
      - limit: {requests: 100, unit: Second}
      - limit: {requests: 10, unit: Minute, burst: 20}
        key: {clientIP: {prefixLength: 24, prefixLengthV6: 64}}
      - limit: {requests: 5, unit: Second}
        key: {header: x-api-key}
`, nil},
		{"global rate limits without the service", svc, "  rateLimit: {global: {rules: [{limit: {requests: 1, unit: Second, burst: 2}}]}}\n",
			[]string{"spec.rateLimit.global: global limits need the rate-limit service: MeshConfig spec.rateLimitService", "spec.rateLimit.global.rules[0].limit.burst: a global limit counts requests per window"}},
		{"bad rate limits", svc, `  rateLimit:
    local:
      maxKeys: 0
      rules:
      - limit: {requests: 0, unit: Week, burst: 0}
      - limit: {requests: 1, unit: Second}
      - limit: {requests: 1, unit: Second}
        key: {clientIP: {prefixLength: 33}, header: "bad header"}
      - limit: {requests: 1, unit: Second}
        key: {claim: {name: "a.b"}}
      - limit: {requests: 1, unit: Second}
        key: {principal: {}, claim: {name: ""}}
    global: {failureMode: Open, rules: []}
`, []string{"spec.rateLimit.global: global limits need", "spec.rateLimit.local.maxKeys: 0: want 1 to 100000", "spec.rateLimit.local.rules[0].limit.requests: 0: want 1 or more",
			`spec.rateLimit.local.rules[0].limit.unit: "Week": want one of Second, Minute, Hour, Day`, "spec.rateLimit.local.rules[0].limit.burst: 0",
			"spec.rateLimit.local.rules[1].key: a key is required", "spec.rateLimit.local.rules[2].key.clientIP.prefixLength: 33: want 1 to 32",
			"spec.rateLimit.local.rules[2].key.header:", "spec.rateLimit.local.rules[2].key: exactly one of clientIP, header, principal and claim",
			`spec.rateLimit.local.rules[3].key.claim.name: "a.b": want a top-level claim name`, "spec.rateLimit.local.rules[4].key.claim.name: required",
			"spec.rateLimit.local.rules[4].key: exactly one of clientIP, header, principal and claim",
			`spec.rateLimit.global.failureMode: "Open": want Allow or Deny`, "spec.rateLimit.global.rules: at least one rule is required"}},
		{"empty rate limit", svc, "  rateLimit: {}\n", []string{"spec.rateLimit: rateLimit needs local, global or both"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := LoadFiles(File{Name: "base.yaml", Data: []byte(trafficBase)},
				File{Name: "tp.yaml", Data: []byte(trafficPolicy(tt.targets, tt.sections))})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if len(set.TrafficPolicies) != 1 || set.TrafficPolicies[0].Name != "tp" {
					t.Fatalf("TrafficPolicies = %v", set.TrafficPolicies)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load: no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors:\n%v\nwant one containing %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "tp.yaml:") {
				t.Errorf("errors %v do not name tp.yaml", err)
			}
		})
	}
}

// TestTrafficPolicyStatus: a policy is Accepted; one whose target is
// missing is Accepted too, with the reason TargetNotFound and a
// ResolvedRefs=False condition, as a SecurityPolicy's.
func TestTrafficPolicyStatus(t *testing.T) {
	t.Parallel()
	r := Evaluate(Input{Files: []File{
		{Name: "base.yaml", Data: []byte(trafficBase)},
		{Name: "tp.yaml", Data: []byte(trafficPolicy(`[{kind: Service, name: orders}]`, "  timeouts: {request: 1s}\n"))},
		{Name: "bad.yaml", Data: []byte(strings.Replace(trafficPolicy(`[{kind: Service, name: gone}]`, "  timeouts: {request: 1s}\n"), "name: tp", "name: bad", 1))},
	}})
	ok := findStatus(r, KindTrafficPolicy, "tp")
	if ok == nil || ok.State != StateAccepted {
		t.Fatalf("tp status = %+v, want Accepted", ok)
	}
	bad := findStatus(r, KindTrafficPolicy, "bad")
	if bad == nil || bad.Reason != ReasonTargetNotFound || len(bad.Problems) == 0 || !strings.Contains(bad.Problems[0], `service "gone" not found`) {
		t.Fatalf("bad status = %+v, want reason TargetNotFound: service not found", bad)
	}
	conds, _ := conditionStrings(bad.Object.Status)
	if got := strings.Join(conds, " "); got != "Accepted=True/Accepted ResolvedRefs=False/TargetNotFound" {
		t.Errorf("bad conditions = %s, want Accepted=True/Accepted ResolvedRefs=False/TargetNotFound", got)
	}
}
