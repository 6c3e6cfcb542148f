package translate

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// A TrafficPolicy on the wire (docs/traffic.md, "TrafficPolicy on the
// wire"). What it sets on a service port's cluster (model.ClusterTraffic)
// is the same for every caller, gateway or sidecar; what it sets on routes
// (model.RouteTraffic) is the rule's, else the gateway port's, else the
// backend service port's, section by section, and a rule's own Gateway API
// retry and timeouts win over it:
//
//   - loadBalancer: Cluster.lb_policy with round_robin_lb_config /
//     least_request_lb_config (choice_count 2, slow_start_config),
//     ring_hash_lb_config, maglev_lb_config; hash: RouteAction.hash_policy
//     on every route to the cluster;
//   - timeouts.connect: Cluster.connect_timeout; timeouts.idle.upstream:
//     HttpProtocolOptions.common_http_protocol_options.idle_timeout;
//     timeouts.request: RouteAction.timeout; timeouts.perTry:
//     RetryPolicy.per_try_timeout; timeouts.idle.downstream:
//     RouteAction.idle_timeout;
//   - retry: RouteAction.retry_policy (retry_on, num_retries,
//     retriable_status_codes, retry_back_off, previous_hosts, and the
//     methods as retriable_request_headers on :method); retry.budget:
//     circuit_breakers.thresholds[0].retry_budget;
//   - circuitBreaker: circuit_breakers.thresholds[0]; outlierDetection:
//     Cluster.outlier_detection; healthCheck: Cluster.health_checks.

// Defaults of the sections where Envoy has none or a different one.
const (
	// leastRequestChoices is choice_count: power of two choices.
	leastRequestChoices = 2
	// defaultHealthyThreshold and defaultUnhealthyThreshold: Envoy
	// requires both.
	defaultHealthyThreshold   = 1
	defaultUnhealthyThreshold = 3
	// enforcingAlways is an outlier detection enforcement percentage.
	enforcingAlways = 100
)

// setClusterTraffic sets what a TrafficPolicy says of a service port's
// cluster.
func setClusterTraffic(c *clusterv3.Cluster, port *model.ServicePort) error {
	t := port.Traffic
	if t == nil {
		return nil
	}
	var slowStart *clusterv3.Cluster_SlowStartConfig
	if t.SlowStart != nil {
		slowStart = &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(*t.SlowStart)}
	}
	switch t.LB {
	case policy.LBRoundRobin:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		if slowStart != nil {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: slowStart}}
		}
	case policy.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: wrapperspb.UInt32(leastRequestChoices), SlowStartConfig: slowStart}}
	case policy.LBRandom:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case policy.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{}}
	case policy.LBMaglev:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{}}
	}
	if t.ConnectTimeout != nil {
		c.ConnectTimeout = durationpb.New(*t.ConnectTimeout)
	}
	if t.IdleTimeout != nil {
		if err := setUpstreamIdleTimeout(c, port, *t.IdleTimeout); err != nil {
			return err
		}
	}
	if t.CircuitBreaker != nil || t.RetryBudget != nil {
		c.CircuitBreakers = circuitBreakers(t.CircuitBreaker, t.RetryBudget)
	}
	if t.Outlier != nil {
		od, err := outlierDetection(t.Outlier)
		if err != nil {
			return fmt.Errorf("cluster %q: outlier_detection: %w", c.Name, err)
		}
		c.OutlierDetection = od
	}
	if t.HealthCheck != nil {
		hc, err := healthCheck(t.HealthCheck)
		if err != nil {
			return fmt.Errorf("cluster %q: health_checks: %w", c.Name, err)
		}
		c.HealthChecks = []*corev3.HealthCheck{hc}
	}
	return nil
}

// setUpstreamIdleTimeout sets the idle timeout of the cluster's pooled
// connections in its HttpProtocolOptions (made for an HTTP/1.1 cluster,
// which has none).
func setUpstreamIdleTimeout(c *clusterv3.Cluster, port *model.ServicePort, idle time.Duration) error {
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if anyOpts, ok := c.TypedExtensionProtocolOptions[httpProtocolOptionsName]; ok {
		if err := anyOpts.UnmarshalTo(opts); err != nil {
			return fmt.Errorf("cluster %q: protocol options: %w", c.Name, err)
		}
	} else {
		explicit := &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}
		if port.Protocol == model.ProtocolHTTP2 {
			explicit.ProtocolConfig = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
		}
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit}
	}
	opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)}
	typed, err := anypb.New(opts)
	if err != nil {
		return fmt.Errorf("cluster %q: protocol options: %w", c.Name, err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsName: typed}
	return nil
}

func uint32Of(v *int32) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(uint32(*v))
}

// circuitBreakers is the default-priority thresholds of a circuitBreaker
// section and a retry budget.
func circuitBreakers(cb *policy.CircuitBreaker, budget *policy.RetryBudget) *clusterv3.CircuitBreakers {
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	if cb != nil {
		th.MaxConnections = uint32Of(cb.MaxConnections)
		th.MaxPendingRequests = uint32Of(cb.MaxPendingRequests)
		th.MaxRequests = uint32Of(cb.MaxRequests)
		th.MaxRetries = uint32Of(cb.MaxRetries)
	}
	if budget != nil {
		rb := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{MinRetryConcurrency: uint32Of(budget.MinConcurrency)}
		if budget.Percent != nil {
			rb.BudgetPercent = &typev3.Percent{Value: *budget.Percent}
		}
		th.RetryBudget = rb
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
}

func durationOf(d gwapiv1.Duration) (*durationpb.Duration, error) {
	if d == "" {
		return nil, nil
	}
	v, err := policy.ParseDuration(d)
	if err != nil {
		return nil, err
	}
	return durationpb.New(v), nil
}

// outlierDetection is Envoy's outlier_detection for the section. Envoy
// enforces consecutive 5xx and success rate by default: each is enforced
// only when the section sets it, and the others are when it sets them.
func outlierDetection(o *policy.OutlierDetection) (*clusterv3.OutlierDetection, error) {
	od := &clusterv3.OutlierDetection{
		Consecutive_5Xx:           uint32Of(o.Consecutive5xx),
		EnforcingConsecutive_5Xx:  wrapperspb.UInt32(0),
		ConsecutiveGatewayFailure: uint32Of(o.ConsecutiveGatewayErrors),
		MaxEjectionPercent:        uint32Of(o.MaxEjectionPercent),
		EnforcingSuccessRate:      wrapperspb.UInt32(0),
	}
	if o.Consecutive5xx != nil {
		od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforcingAlways)
	}
	if o.ConsecutiveGatewayErrors != nil {
		od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforcingAlways)
	}
	if s := o.SuccessRate; s != nil {
		od.EnforcingSuccessRate = wrapperspb.UInt32(enforcingAlways)
		od.SuccessRateMinimumHosts = uint32Of(s.MinHosts)
		od.SuccessRateRequestVolume = uint32Of(s.RequestVolume)
		od.SuccessRateStdevFactor = uint32Of(s.StdevFactor)
	}
	if f := o.FailurePercentage; f != nil {
		od.EnforcingFailurePercentage = wrapperspb.UInt32(enforcingAlways)
		od.FailurePercentageThreshold = uint32Of(f.Threshold)
		od.FailurePercentageMinimumHosts = uint32Of(f.MinHosts)
		od.FailurePercentageRequestVolume = uint32Of(f.RequestVolume)
	}
	var err error
	if od.Interval, err = durationOf(o.Interval); err != nil {
		return nil, err
	}
	if od.BaseEjectionTime, err = durationOf(o.BaseEjectionTime); err != nil {
		return nil, err
	}
	return od, nil
}

// healthCheck is Envoy's active health check for the section.
func healthCheck(h *policy.HealthCheck) (*corev3.HealthCheck, error) {
	hc := &corev3.HealthCheck{
		HealthyThreshold:   wrapperspb.UInt32(defaultHealthyThreshold),
		UnhealthyThreshold: wrapperspb.UInt32(defaultUnhealthyThreshold),
	}
	if h.HealthyThreshold != nil {
		hc.HealthyThreshold = uint32Of(h.HealthyThreshold)
	}
	if h.UnhealthyThreshold != nil {
		hc.UnhealthyThreshold = uint32Of(h.UnhealthyThreshold)
	}
	var err error
	if hc.Interval, err = durationOf(h.Interval); err != nil {
		return nil, err
	}
	if hc.Timeout, err = durationOf(h.Timeout); err != nil {
		return nil, err
	}
	if hc.IntervalJitter, err = durationOf(h.Jitter); err != nil {
		return nil, err
	}
	switch {
	case h.HTTP != nil:
		hh := &corev3.HealthCheck_HttpHealthCheck{Path: h.HTTP.Path, Host: h.HTTP.Host}
		for _, s := range h.HTTP.ExpectedStatuses {
			hh.ExpectedStatuses = append(hh.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
		}
		hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hh}
	default:
		hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	}
	return hc, nil
}

// backendPort is the service port of a rule's first backend, or nil.
func backendPort(m *model.Model, a *model.Action) *model.ServicePort {
	for _, b := range a.Backends {
		if b.Cluster == "" || b.Weight <= 0 {
			continue
		}
		if svc := m.Service(b.Service.Namespace, b.Service.Name); svc != nil {
			return svc.Port(b.Port)
		}
	}
	return nil
}

// setRouteTraffic sets on a route action what the TrafficPolicies say of
// it: rule (the rule's), outer (the gateway port's, or nil) and the
// backend port's, section by section, under the rule's own Gateway API
// fields (a, already translated by setTraffic).
func setRouteTraffic(ra *routev3.RouteAction, a *model.Action, port *model.ServicePort, rule, outer *model.RouteTraffic) (*model.RouteTraffic, error) {
	var portRoute *model.RouteTraffic
	if port != nil {
		portRoute = port.RouteTraffic
		if ct := port.Traffic; ct != nil && ct.Hash != nil {
			ra.HashPolicy = []*routev3.RouteAction_HashPolicy{hashPolicy(ct.Hash)}
		}
	}
	t := model.EffectiveRouteTraffic(rule, outer, portRoute)
	if t == nil {
		return nil, nil
	}
	if t.StreamIdle != nil {
		ra.IdleTimeout = durationpb.New(*t.StreamIdle)
	}
	if a.Retry == nil && t.Retry != nil {
		p, err := trafficRetryPolicy(t.Retry)
		if err != nil {
			return nil, err
		}
		ra.RetryPolicy = p
	}
	if t.PerTry != nil && (a.BackendRequestTimeout == nil || *a.BackendRequestTimeout == 0) {
		if ra.RetryPolicy == nil {
			ra.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
		}
		ra.RetryPolicy.PerTryTimeout = durationpb.New(*t.PerTry)
		if a.Timeout == nil && t.Timeout == nil {
			// Each try is bounded, and their number: Envoy's default
			// route timeout (15 s) would cut the last one short.
			ra.Timeout = durationpb.New(0)
		}
	}
	if a.Timeout == nil && t.Timeout != nil {
		ra.Timeout = durationpb.New(*t.Timeout)
	}
	return t, nil
}

// hashPolicy is the route hash policy of a consistent-hash balancer.
func hashPolicy(h *model.HashPolicy) *routev3.RouteAction_HashPolicy {
	switch {
	case h.Header != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(h.Header)}}}
	case h.Cookie != "":
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie, Path: h.CookiePath}
		if h.CookieTTL > 0 {
			c.Ttl = durationpb.New(h.CookieTTL)
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	}
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
		ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
}

// trafficRetryPolicy is the retry policy of a TrafficPolicy's retry
// section: as a rule's retry (previous_hosts), with its conditions, and
// its methods as retriable_request_headers (a retry needs one to match).
func trafficRetryPolicy(r *model.TrafficRetry) (*routev3.RetryPolicy, error) {
	p := &routev3.RetryPolicy{
		RetryOn:                       strings.Join(r.RetryOn, ","),
		NumRetries:                    wrapperspb.UInt32(uint32(r.Attempts)),
		HostSelectionRetryMaxAttempts: hostSelectionAttempts,
	}
	for _, c := range r.Codes {
		p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(c))
	}
	if r.BaseBackoff > 0 {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(max(r.BaseBackoff, minRetryBackoff)),
			MaxInterval:  durationpb.New(max(r.MaxBackoff, r.BaseBackoff, minRetryBackoff)),
		}
	}
	for _, m := range r.Methods {
		p.RetriableRequestHeaders = append(p.RetriableRequestHeaders, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(m, false)},
		})
	}
	predicate, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PreviousHostsPredicateName, err)
	}
	p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
		Name:       PreviousHostsPredicateName,
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: predicate},
	}}
	return p, nil
}

// FaultFilterName is the fault injection HTTP filter
// (envoy.extensions.filters.http.fault.v3.HTTPFault) on the listeners some
// of whose routes have a faultInjection section: it has no faults of its
// own, and each such route has its per-route HTTPFault. A listener without
// such routes does not have the filter.
const FaultFilterName = "envoy.filters.http.fault"

// faultFilter is the fault filter of a listener.
func faultFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&faultv3.HTTPFault{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", FaultFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: FaultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// percentOf is a TrafficPolicy percentage as Envoy's fractional percent
// (per million).
func percentOf(p float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(p * 10_000)), Denominator: typev3.FractionalPercent_MILLION}
}

// setFault gives a route the per-route HTTPFault of a faultInjection
// section.
func setFault(r *routev3.Route, f *policy.FaultInjection) error {
	if f == nil {
		return nil
	}
	hf := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		fixed, err := durationOf(d.Fixed)
		if err != nil {
			return fmt.Errorf("%s: delay: %w", FaultFilterName, err)
		}
		hf.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: fixed},
			Percentage:         percentOf(d.Percent),
		}
	}
	if a := f.Abort; a != nil {
		abort := &faultv3.FaultAbort{Percentage: percentOf(a.Percent)}
		if a.HTTPStatus != nil {
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(*a.HTTPStatus)}
		} else if a.GRPCStatus != nil {
			abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(*a.GRPCStatus)}
		}
		hf.Abort = abort
	}
	if h := f.OnlyWithHeader; h != nil {
		hf.Headers = []*routev3.HeaderMatcher{{
			Name:                 strings.ToLower(h.Name),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(h.Value, false)},
		}}
	}
	typed, err := anypb.New(hf)
	if err != nil {
		return fmt.Errorf("%s per route: %w", FaultFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[FaultFilterName] = typed
	return nil
}

// needsFault reports whether a route of rules (at a gateway port with
// outer traffic, or nil) gets a faultInjection section.
func needsFault(m *model.Model, rules []*model.Rule, outer *model.RouteTraffic) bool {
	for _, r := range rules {
		var portRoute *model.RouteTraffic
		if port := backendPort(m, r.Action); port != nil {
			portRoute = port.RouteTraffic
		}
		if t := model.EffectiveRouteTraffic(r.Traffic, outer, portRoute); t != nil && t.Fault != nil {
			return true
		}
	}
	return false
}

// modelHasFault reports whether some route a sidecar's outbound listener
// may serve gets a faultInjection section.
func modelHasFault(m *model.Model) bool {
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			if port.RouteTraffic != nil && port.RouteTraffic.Fault != nil || needsFault(m, port.Routes, nil) {
				return true
			}
			for _, rules := range port.ConsumerRoutes {
				if needsFault(m, rules, nil) {
					return true
				}
			}
		}
	}
	return false
}

// countsAttempts reports whether traffic t asks for attempt counts.
func countsAttempts(t *model.RouteTraffic) bool {
	return t != nil && t.Retry != nil && t.Retry.AttemptsHeader
}

// setAttemptCounts sets Envoy's include_request_attempt_count and
// include_attempt_count_in_response on a virtual host when a route of its
// rules (at a gateway port with outer traffic, or nil), or the default
// route to port (rules empty, port not nil), has a TrafficPolicy retry with
// attemptsHeader: Envoy has them per virtual host only.
func setAttemptCounts(vh *routev3.VirtualHost, m *model.Model, rules []*model.Rule, outer *model.RouteTraffic, port *model.ServicePort) {
	on := len(rules) == 0 && port != nil && countsAttempts(port.RouteTraffic)
	for _, r := range rules {
		var portRoute *model.RouteTraffic
		if p := backendPort(m, r.Action); p != nil {
			portRoute = p.RouteTraffic
		}
		on = on || countsAttempts(model.EffectiveRouteTraffic(r.Traffic, outer, portRoute))
	}
	if on {
		vh.IncludeRequestAttemptCount = true
		vh.IncludeAttemptCountInResponse = true
	}
}

// BufferFilterName is the buffer HTTP filter
// (envoy.extensions.filters.http.buffer.v3.Buffer) on the listeners some of
// whose routes have a bodyLimits section: each such route has a per-route
// BufferPerRoute with its max_request_bytes, and every other route of the
// listener one that disables it (Envoy would otherwise buffer their bodies
// up to the listener's limit). A listener without such routes does not
// have the filter.
const BufferFilterName = "envoy.filters.http.buffer"

// bufferListenerLimit is the listener-level max_request_bytes, which Envoy
// requires: no route uses it (each has its own limit or is disabled).
const bufferListenerLimit = policy.MaxBodyLimit

// bufferFilter is the buffer filter of a listener.
func bufferFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(bufferListenerLimit)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BufferFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: BufferFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// setBodyLimits gives a route the per-route configs of a bodyLimits
// section (nil: none): the Buffer of its request limit, the response limit
// filter's of its response limit.
func setBodyLimits(r *routev3.Route, b *policy.BodyLimits) error {
	if b == nil {
		return nil
	}
	if b.MaxResponseBytes != nil {
		if err := setResponseLimit(r, *b.MaxResponseBytes); err != nil {
			return err
		}
	}
	if b.MaxRequestBytes == nil {
		return nil
	}
	return setBufferPerRoute(r, &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{
		Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(uint32(*b.MaxRequestBytes))}}})
}

func setBufferPerRoute(r *routev3.Route, per *bufferv3.BufferPerRoute) error {
	typed, err := anypb.New(per)
	if err != nil {
		return fmt.Errorf("%s per route: %w", BufferFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[BufferFilterName] = typed
	return nil
}

// disableBufferElsewhere disables the buffer filter on every route of rc
// without a body limit of its own.
func disableBufferElsewhere(rc *routev3.RouteConfiguration) error {
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			if _, ok := r.TypedPerFilterConfig[BufferFilterName]; ok {
				continue
			}
			if err := setBufferPerRoute(r, &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Disabled{Disabled: true}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasRequestLimit reports whether traffic t limits request bodies.
func hasRequestLimit(t *model.RouteTraffic) bool {
	return t != nil && t.BodyLimits != nil && t.BodyLimits.MaxRequestBytes != nil
}

// hasResponseLimit reports whether traffic t limits response bodies.
func hasResponseLimit(t *model.RouteTraffic) bool {
	return t != nil && t.BodyLimits != nil && t.BodyLimits.MaxResponseBytes != nil
}

// ResponseLimitFilterName is meshgate's response limit HTTP filter on the
// listeners some of whose routes have a bodyLimits.maxResponseBytes. Envoy
// has no filter limiting response bodies, so the filter is meshgate's
// own, configured with an xds.type.v3.TypedStruct of type_url
// ResponseLimitTypeURL, value {max_response_bytes: N}: at the listener
// the value is {} (no limit), and each limited route has a per-route
// envoy.config.route.v3.FilterConfig holding its limit; the other routes
// need nothing. The entry and the per-route configs are optional
// (is_optional), so that an Envoy given the same xDS skips the filter
// (and serves responses unlimited) instead of rejecting the listener.
const ResponseLimitFilterName = "meshgate.filters.http.response_limit"

// ResponseLimitTypeURL is the TypedStruct type_url of the response limit
// filter (dataplane/filters/responselimit).
const ResponseLimitTypeURL = "meshgate.dev/filters.http.response_limit.v1.ResponseLimit"

// responseLimitFilter is the response limit filter of a listener.
func responseLimitFilter() (*hcmv3.HttpFilter, error) {
	typed, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: ResponseLimitTypeURL, Value: &structpb.Struct{}})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ResponseLimitFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: ResponseLimitFilterName, IsOptional: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}

// setResponseLimit gives a route the per-route config of the response
// limit filter.
func setResponseLimit(r *routev3.Route, maxBytes int64) error {
	ts, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: ResponseLimitTypeURL, Value: &structpb.Struct{
		Fields: map[string]*structpb.Value{"max_response_bytes": structpb.NewNumberValue(float64(maxBytes))}}})
	if err != nil {
		return fmt.Errorf("%s per route: %w", ResponseLimitFilterName, err)
	}
	typed, err := anypb.New(&routev3.FilterConfig{Config: ts, IsOptional: true})
	if err != nil {
		return fmt.Errorf("%s per route: %w", ResponseLimitFilterName, err)
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[ResponseLimitFilterName] = typed
	return nil
}

// anyRouteTraffic reports whether a route of rules (at a gateway port with
// outer traffic, or nil) has traffic for which has is true.
func anyRouteTraffic(m *model.Model, rules []*model.Rule, outer *model.RouteTraffic, has func(*model.RouteTraffic) bool) bool {
	for _, r := range rules {
		var portRoute *model.RouteTraffic
		if port := backendPort(m, r.Action); port != nil {
			portRoute = port.RouteTraffic
		}
		if has(model.EffectiveRouteTraffic(r.Traffic, outer, portRoute)) {
			return true
		}
	}
	return false
}

// modelAnyRouteTraffic reports whether some route a sidecar's outbound
// listener may serve has traffic for which has is true.
func modelAnyRouteTraffic(m *model.Model, has func(*model.RouteTraffic) bool) bool {
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			if has(port.RouteTraffic) || anyRouteTraffic(m, port.Routes, nil, has) {
				return true
			}
			for _, rules := range port.ConsumerRoutes {
				if anyRouteTraffic(m, rules, nil, has) {
					return true
				}
			}
		}
	}
	return false
}

// Priorities of the localities of a cluster that prefers local endpoints,
// in the EDS of a proxy that knows its zone.
const (
	priorityLocal  = 0
	priorityRemote = 1
)

// preferLocal gives the load assignments of the clusters whose
// TrafficPolicy prefers local endpoints, in the EDS of a proxy in zone,
// Envoy's priorities: the localities of zone priority 0, the others
// priority 1, so that the proxy sends requests to its zone's endpoints
// while they are healthy and fails over to the others (Envoy's priority
// failover, overprovisioning factor 1.4). The shared assignments are not
// changed: those of endpoints replaces them with copies. An assignment
// without endpoints in zone is left as it is (every endpoint then takes
// its share).
func preferLocal(m *model.Model, zone string, endpoints []*endpointv3.ClusterLoadAssignment) {
	if zone == "" {
		return
	}
	prefer := map[string]bool{}
	for _, svc := range m.Services {
		for _, port := range svc.Ports {
			if port.Traffic != nil && port.Traffic.PreferLocal {
				prefer[port.Cluster] = true
			}
		}
	}
	if len(prefer) == 0 {
		return
	}
	for i, cla := range endpoints {
		if !prefer[cla.GetClusterName()] || !slices.ContainsFunc(cla.GetEndpoints(), func(l *endpointv3.LocalityLbEndpoints) bool {
			return l.GetLocality().GetZone() == zone
		}) {
			continue
		}
		local := &endpointv3.ClusterLoadAssignment{ClusterName: cla.GetClusterName(), Policy: cla.GetPolicy()}
		for _, l := range cla.GetEndpoints() {
			prioritized := &endpointv3.LocalityLbEndpoints{Locality: l.GetLocality(), LbEndpoints: l.GetLbEndpoints(), LoadBalancingWeight: l.GetLoadBalancingWeight(), Priority: priorityRemote}
			if l.GetLocality().GetZone() == zone {
				prioritized.Priority = priorityLocal
			}
			local.Endpoints = append(local.Endpoints, prioritized)
		}
		endpoints[i] = local
	}
}

// PrefersLocal reports whether the cluster of port has per-proxy load
// assignments (a TrafficPolicy prefers local endpoints): they cannot be
// shared between proxies of different zones.
func PrefersLocal(port *model.ServicePort) bool {
	return port.Traffic != nil && port.Traffic.PreferLocal
}
