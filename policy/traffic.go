package policy

import (
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// KindTrafficPolicy is the meshgate.dev kind of traffic management:
// load balancing, timeouts, retries, circuit breaking, outlier detection,
// health checks, fault injection, body limits and request validation.
const KindTrafficPolicy = "TrafficPolicy"

// Load balancer types of a TrafficPolicy (Envoy's lb_policy).
const (
	LBRoundRobin   = "RoundRobin"
	LBLeastRequest = "LeastRequest"
	LBRandom       = "Random"
	LBRingHash     = "RingHash"
	LBMaglev       = "Maglev"
)

// LBTypes are the load balancer types, in the order they are listed to users.
var LBTypes = []string{LBRoundRobin, LBLeastRequest, LBRandom, LBRingHash, LBMaglev}

// RetryOn conditions of a TrafficPolicy (Envoy's x-envoy-retry-on names).
var RetryOnConditions = []string{"5xx", "gateway-error", "reset", "connect-failure", "retriable-status-codes"}

// IdempotentMethods are the methods retried when a retry names no methods.
var IdempotentMethods = []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}

// TrafficPolicy is the meshgate.dev/v1alpha1 TrafficPolicy: how the
// requests to the Services, through the Gateways or along the HTTPRoutes it
// targets are balanced, bounded in time, retried and protected. The more
// specific target wins section by section (HTTPRoute, then Gateway, then the
// backend Service), and the Gateway API fields of a route rule (retry,
// timeouts) win over it.
type TrafficPolicy struct {
	Name      string
	Namespace string
	Spec      TrafficPolicySpec
	Source    Source
}

// TrafficPolicySpec is the spec of a TrafficPolicy. Every section is
// optional; a policy needs at least one.
type TrafficPolicySpec struct {
	// TargetRefs are the resources the policy applies to, in its namespace.
	TargetRefs []TrafficTargetRef `json:"targetRefs"`
	// LoadBalancer picks the endpoint of each request (Service targets only:
	// the cluster of a service port is shared by every caller).
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
	// Timeouts bound connections, requests and idle streams.
	Timeouts *TrafficTimeouts `json:"timeouts,omitempty"`
	// Retry retries failed requests.
	Retry *TrafficRetry `json:"retry,omitempty"`
	// CircuitBreaker bounds what a cluster has in flight (Service targets only).
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// OutlierDetection ejects failing endpoints (Service targets only).
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// HealthCheck probes endpoints actively (Service targets only).
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// FaultInjection delays or aborts a share of the requests.
	FaultInjection *FaultInjection `json:"faultInjection,omitempty"`
	// BodyLimits bound request and response bodies.
	BodyLimits *BodyLimits `json:"bodyLimits,omitempty"`
	// RateLimit limits the request rate, per proxy or across proxies.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// RequestValidation validates requests against an OpenAPI 3 document
	// (HTTPRoute targets only).
	RequestValidation *RequestValidation `json:"requestValidation,omitempty"`
	// Cache caches the responses of the routes at the gateway
	// (docs/api-gateway.md "Response caching").
	Cache *ResponseCache `json:"cache,omitempty"`
}

// TrafficTargetRef names a resource in the policy's namespace: a Service
// (group "", unset or meshgate.dev), a Gateway or an HTTPRoute (group unset
// or gateway.networking.k8s.io); SectionName narrows it to a port of the
// Service (by name), a listener of the Gateway or a rule of the HTTPRoute
// (by name).
type TrafficTargetRef struct {
	Group       *string              `json:"group,omitempty"`
	Kind        string               `json:"kind"`
	Name        string               `json:"name"`
	SectionName *gwapiv1.SectionName `json:"sectionName,omitempty"`
}

// LoadBalancer is the loadBalancer section.
type LoadBalancer struct {
	// Type is RoundRobin (the default), LeastRequest (power of two
	// choices), Random, RingHash or Maglev.
	Type string `json:"type,omitempty"`
	// Hash is what RingHash and Maglev hash (required for them, refused
	// for the others).
	Hash *HashOn `json:"hash,omitempty"`
	// SlowStart ramps the share of a new endpoint up over a window
	// (RoundRobin and LeastRequest).
	SlowStart *SlowStart `json:"slowStart,omitempty"`
	// Locality makes each proxy prefer the endpoints in its own zone.
	Locality *LocalityLB `json:"locality,omitempty"`
}

// LocalityLB is the locality of a load balancer: with PreferLocal, a proxy
// that knows its zone (meshgate gateway/sidecar --zone) sends the requests
// to the endpoints in its zone (those labelled LabelZone, or
// LabelZoneShort, with it) while they are healthy, and to the others when
// they are absent or unhealthy.
type LocalityLB struct {
	PreferLocal bool `json:"preferLocal"`
}

// The endpoint labels that give an endpoint's zone: the Kubernetes
// well-known label, else the short one (the only one a Consul service or
// node meta key can be).
const (
	LabelZone      = "topology.kubernetes.io/zone"
	LabelZoneShort = "zone"
)

// EndpointZone is the zone of an endpoint with labels, "" when none.
func EndpointZone(labels map[string]string) string {
	if z := labels[LabelZone]; z != "" {
		return z
	}
	return labels[LabelZoneShort]
}

// HashOn is one of: a request header, a cookie, the client's IP address.
type HashOn struct {
	// Header names a request header; a request without it is balanced at
	// random.
	Header string `json:"header,omitempty"`
	// Cookie names a cookie; the proxy sets it when the request has none
	// (with TTL and Path), so that the client keeps its endpoint.
	Cookie *HashCookie `json:"cookie,omitempty"`
	// SourceIP hashes the address of the client connection.
	SourceIP bool `json:"sourceIP,omitempty"`
}

// HashCookie is the cookie a RingHash or Maglev balancer hashes.
type HashCookie struct {
	Name string `json:"name"`
	// TTL is the cookie's Max-Age when the proxy sets it (required: a
	// cookie without it is not set by the proxy).
	TTL gwapiv1.Duration `json:"ttl,omitempty"`
	// Path is the cookie's Path when the proxy sets it.
	Path string `json:"path,omitempty"`
}

// SlowStart is the slowStart of a load balancer.
type SlowStart struct {
	// Window is how long a new endpoint takes to get its full share.
	Window gwapiv1.Duration `json:"window"`
}

// TrafficTimeouts is the timeouts section.
type TrafficTimeouts struct {
	// Connect bounds a connection to an endpoint (Service targets only;
	// default 5s).
	Connect gwapiv1.Duration `json:"connect,omitempty"`
	// Request bounds a whole request, retries included (a route rule's
	// timeouts.request wins).
	Request gwapiv1.Duration `json:"request,omitempty"`
	// PerTry bounds each try (a route rule's timeouts.backendRequest wins).
	PerTry gwapiv1.Duration `json:"perTry,omitempty"`
	// Idle bounds idle connections and streams.
	Idle *IdleTimeouts `json:"idle,omitempty"`
}

// IdleTimeouts are the idle timeouts.
type IdleTimeouts struct {
	// Upstream closes a pooled connection to an endpoint idle this long
	// (Service targets only).
	Upstream gwapiv1.Duration `json:"upstream,omitempty"`
	// Downstream ends a request whose stream is idle this long.
	Downstream gwapiv1.Duration `json:"downstream,omitempty"`
}

// TrafficRetry is the retry section (a route rule's retry wins).
type TrafficRetry struct {
	// Attempts is the number of retries after the first try (default 1).
	Attempts *int32 `json:"attempts,omitempty"`
	// PerTryTimeout bounds each try (same as timeouts.perTry: set one).
	PerTryTimeout gwapiv1.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions retried: 5xx, gateway-error, reset,
	// connect-failure, retriable-status-codes (default connect-failure,
	// reset and, with codes, retriable-status-codes).
	RetryOn []string `json:"retryOn,omitempty"`
	// RetriableStatusCodes are the statuses retriable-status-codes retries.
	RetriableStatusCodes []int32 `json:"retriableStatusCodes,omitempty"`
	// Backoff is the exponential backoff (with jitter) between tries.
	Backoff *RetryBackoff `json:"backoff,omitempty"`
	// Budget bounds the retries in flight to a share of the requests in
	// flight (Service targets only).
	Budget *RetryBudget `json:"budget,omitempty"`
	// Methods are the methods retried; by default the idempotent ones
	// (IdempotentMethods).
	Methods []string `json:"methods,omitempty"`
	// AttemptsHeader, when true, makes the proxy tell the upstream which
	// try a request is and the client how many tries its response took
	// (x-envoy-attempt-count on both; for the whole virtual host).
	AttemptsHeader bool `json:"attemptsHeader,omitempty"`
}

// RetryBackoff is the base and maximum interval between tries.
type RetryBackoff struct {
	Base gwapiv1.Duration `json:"base"`
	// Max defaults to 10 times Base.
	Max gwapiv1.Duration `json:"max,omitempty"`
}

// RetryBudget is Envoy's retry budget.
type RetryBudget struct {
	// Percent of the active requests that may be retries (default 20).
	Percent *float64 `json:"percent,omitempty"`
	// MinConcurrency is the retries always allowed (default 3).
	MinConcurrency *int32 `json:"minConcurrency,omitempty"`
}

// CircuitBreaker is the circuitBreaker section: limits per cluster; over
// one, a request is answered 503 at once.
type CircuitBreaker struct {
	MaxConnections     *int32 `json:"maxConnections,omitempty"`
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	MaxRequests        *int32 `json:"maxRequests,omitempty"`
	MaxRetries         *int32 `json:"maxRetries,omitempty"`
}

// OutlierDetection is the outlierDetection section.
type OutlierDetection struct {
	Consecutive5xx           *int32             `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayErrors *int32             `json:"consecutiveGatewayErrors,omitempty"`
	SuccessRate              *SuccessRate       `json:"successRate,omitempty"`
	FailurePercentage        *FailurePercentage `json:"failurePercentage,omitempty"`
	Interval                 gwapiv1.Duration   `json:"interval,omitempty"`
	BaseEjectionTime         gwapiv1.Duration   `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent       *int32             `json:"maxEjectionPercent,omitempty"`
}

// SuccessRate ejects endpoints whose success rate is StdevFactor/1000
// standard deviations below the mean.
type SuccessRate struct {
	MinHosts      *int32 `json:"minHosts,omitempty"`
	RequestVolume *int32 `json:"requestVolume,omitempty"`
	StdevFactor   *int32 `json:"stdevFactor,omitempty"`
}

// FailurePercentage ejects endpoints whose failure percentage is at least
// Threshold.
type FailurePercentage struct {
	Threshold     *int32 `json:"threshold,omitempty"`
	MinHosts      *int32 `json:"minHosts,omitempty"`
	RequestVolume *int32 `json:"requestVolume,omitempty"`
}

// HealthCheck is the healthCheck section: exactly one of HTTP and TCP.
type HealthCheck struct {
	HTTP               *HTTPHealthCheck `json:"http,omitempty"`
	TCP                *TCPHealthCheck  `json:"tcp,omitempty"`
	Interval           gwapiv1.Duration `json:"interval"`
	Timeout            gwapiv1.Duration `json:"timeout"`
	HealthyThreshold   *int32           `json:"healthyThreshold,omitempty"`
	UnhealthyThreshold *int32           `json:"unhealthyThreshold,omitempty"`
	Jitter             gwapiv1.Duration `json:"jitter,omitempty"`
}

// HTTPHealthCheck probes with an HTTP GET.
type HTTPHealthCheck struct {
	Path string `json:"path"`
	Host string `json:"host,omitempty"`
	// ExpectedStatuses default to [200].
	ExpectedStatuses []int32 `json:"expectedStatuses,omitempty"`
}

// TCPHealthCheck probes by connecting.
type TCPHealthCheck struct{}

// FaultInjection is the faultInjection section.
type FaultInjection struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
	// OnlyWithHeader limits the faults to requests with this header.
	OnlyWithHeader *RuleHeader `json:"onlyWithHeader,omitempty"`
}

// FaultDelay delays Percent of the requests by Fixed.
type FaultDelay struct {
	Fixed   gwapiv1.Duration `json:"fixed"`
	Percent float64          `json:"percent"`
}

// FaultAbort answers Percent of the requests with HTTPStatus or GRPCStatus.
type FaultAbort struct {
	HTTPStatus *int32  `json:"httpStatus,omitempty"`
	GRPCStatus *int32  `json:"grpcStatus,omitempty"`
	Percent    float64 `json:"percent"`
}

// BodyLimits bounds bodies, in bytes (at least one of the two): a longer
// request body gets 413, a longer response body 502 (or, when its length
// was not known before it started, is aborted). Each limit is a field of
// its own for precedence: a more specific policy's limit wins over a less
// specific one's, the other limit still coming from the latter.
type BodyLimits struct {
	MaxRequestBytes  *int64 `json:"maxRequestBytes,omitempty"`
	MaxResponseBytes *int64 `json:"maxResponseBytes,omitempty"`
}

// ResponseCache enables the gateway's response cache on the routes a
// TrafficPolicy applies to (at gateways; sidecars do not cache): GET
// responses are stored per RFC 9111 (explicit freshness only) in an
// in-memory LRU of the listener, keyed by method, host, path, the query
// parameters and the request headers chosen here and, for requests with an
// Authorization header, the caller. Every field is optional: `cache: {}`
// enables caching with the defaults.
type ResponseCache struct {
	// TTL, when set, is the freshness lifetime of every stored response,
	// in place of its Cache-Control max-age/s-maxage or Expires (no-store,
	// private and no-cache are still honoured).
	TTL gwapiv1.Duration `json:"ttl,omitempty"`
	// StaleWhileRevalidate serves a response this long past its lifetime
	// (X-Cache: STALE) while one request refreshes it in the background;
	// a response's own stale-while-revalidate directive may say longer.
	StaleWhileRevalidate gwapiv1.Duration `json:"staleWhileRevalidate,omitempty"`
	// Shared caches the responses to authenticated requests once for every
	// caller instead of per caller (only those RFC 9111 lets a shared
	// cache store: public, s-maxage or must-revalidate).
	Shared bool `json:"shared,omitempty"`
	// QueryParameters are the query parameters in the key; unset: all.
	QueryParameters []string `json:"queryParameters,omitempty"`
	// Headers are request headers in the key.
	Headers []string `json:"headers,omitempty"`
	// AllowedVaryHeaders are the headers a response may vary on; one
	// varying on another is not stored. Unset: any.
	AllowedVaryHeaders []string `json:"allowedVaryHeaders,omitempty"`
	// MaxEntryBytes bounds the body of a stored response (default 1 MiB,
	// at most 64 MiB): a longer one is served, not stored.
	MaxEntryBytes *int64 `json:"maxEntryBytes,omitempty"`
	// MaxCacheBytes is the byte budget of the cache of each gateway
	// listener serving the route (default 64 MiB, at most 4 GiB): the
	// largest of its routes' values.
	MaxCacheBytes *int64 `json:"maxCacheBytes,omitempty"`
}
