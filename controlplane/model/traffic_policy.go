package model

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/policy"
)

// ClusterTraffic is what TrafficPolicies targeting a Service set on the
// cluster of one of its ports: the same for every caller, gateway or
// sidecar.
type ClusterTraffic struct {
	// LB is the load balancer type (policy.LBRoundRobin, ...); empty: round robin.
	LB string `json:"lb,omitempty"`
	// Hash is what RingHash and Maglev hash; the routes to the cluster
	// carry it as their hash policy.
	Hash      *HashPolicy    `json:"hash,omitempty"`
	SlowStart *time.Duration `json:"slowStart,omitempty"`
	// PreferLocal: each proxy's EDS puts the endpoints of its zone first
	// (priority 0) and the others after (priority 1).
	PreferLocal bool `json:"preferLocal,omitempty"`
	// ConnectTimeout and IdleTimeout (of pooled upstream connections).
	ConnectTimeout *time.Duration           `json:"connectTimeout,omitempty"`
	IdleTimeout    *time.Duration           `json:"idleTimeout,omitempty"`
	CircuitBreaker *policy.CircuitBreaker   `json:"circuitBreaker,omitempty"`
	RetryBudget    *policy.RetryBudget      `json:"retryBudget,omitempty"`
	Outlier        *policy.OutlierDetection `json:"outlierDetection,omitempty"`
	HealthCheck    *policy.HealthCheck      `json:"healthCheck,omitempty"`
}

// HashPolicy is what a consistent-hash balancer hashes: one of a header, a
// cookie (set by the proxy when absent, with TTL and Path) or the source IP.
type HashPolicy struct {
	Header    string        `json:"header,omitempty"`
	Cookie    string        `json:"cookie,omitempty"`
	CookieTTL time.Duration `json:"cookieTTL,omitempty"`
	// CookiePath is the Path of the cookie the proxy sets.
	CookiePath string `json:"cookiePath,omitempty"`
	SourceIP   bool   `json:"sourceIP,omitempty"`
}

// RouteTraffic is what TrafficPolicies set on the routes of a rule, a
// gateway port or the calls to a service port, section by section.
type RouteTraffic struct {
	// Timeout bounds the whole request; PerTry each try; StreamIdle an
	// idle request stream.
	Timeout    *time.Duration         `json:"timeout,omitempty"`
	PerTry     *time.Duration         `json:"perTry,omitempty"`
	StreamIdle *time.Duration         `json:"streamIdle,omitempty"`
	Retry      *TrafficRetry          `json:"retry,omitempty"`
	Fault      *policy.FaultInjection `json:"fault,omitempty"`
	BodyLimits *policy.BodyLimits     `json:"bodyLimits,omitempty"`
	// RateLimit is the rateLimit section, whole (local and global), of the
	// policy RateLimitPolicy (namespace/name: it names the global rules).
	RateLimit       *policy.RateLimit `json:"rateLimit,omitempty"`
	RateLimitPolicy string            `json:"rateLimitPolicy,omitempty"`
	// RequestValidation validates the requests against an OpenAPI
	// document (HTTPRoute targets only).
	RequestValidation *RequestValidation `json:"requestValidation,omitempty"`
}

// RequestValidation is a TrafficPolicy's requestValidation, compiled.
type RequestValidation struct {
	// Document is the OpenAPI 3 document (JSON or YAML), validated when
	// the policy was loaded.
	Document string `json:"document"`
	// MaxBodyBytes bounds the bodies read for validation.
	MaxBodyBytes int64 `json:"maxBodyBytes"`
	// ReportResponses: the responses are validated too, report-only.
	ReportResponses bool `json:"reportResponses,omitempty"`
}

// compileRequestValidation compiles a requestValidation section with its
// document (nil: none; a section without its document, which Load
// refused, is none).
func compileRequestValidation(rv *policy.RequestValidation, document []byte) *RequestValidation {
	if rv == nil || len(document) == 0 {
		return nil
	}
	out := &RequestValidation{Document: string(document), MaxBodyBytes: policy.DefaultValidationBodyBytes,
		ReportResponses: rv.ResponseValidation == policy.ResponseValidationReportOnly}
	if rv.MaxBodyBytes != nil {
		out.MaxBodyBytes = *rv.MaxBodyBytes
	}
	return out
}

// TrafficRetry is a TrafficPolicy's retry section, compiled.
type TrafficRetry struct {
	Attempts int      `json:"attempts"`
	RetryOn  []string `json:"retryOn"`
	Codes    []int    `json:"codes,omitempty"`
	// BaseBackoff and MaxBackoff: zero when the policy has no backoff.
	BaseBackoff time.Duration `json:"baseBackoff,omitempty"`
	MaxBackoff  time.Duration `json:"maxBackoff,omitempty"`
	// Methods are the methods retried.
	Methods []string `json:"methods"`
	// AttemptsHeader: the attempt count on upstream requests and responses.
	AttemptsHeader bool `json:"attemptsHeader,omitempty"`
}

// mergeRouteTraffic fills the sections of into that it lacks from from;
// into may be nil.
func mergeRouteTraffic(into, from *RouteTraffic) *RouteTraffic {
	if from == nil {
		return into
	}
	if into == nil {
		into = &RouteTraffic{}
	}
	into.Timeout = cmp.Or(into.Timeout, from.Timeout)
	into.PerTry = cmp.Or(into.PerTry, from.PerTry)
	into.StreamIdle = cmp.Or(into.StreamIdle, from.StreamIdle)
	into.Retry = cmp.Or(into.Retry, from.Retry)
	into.Fault = cmp.Or(into.Fault, from.Fault)
	into.BodyLimits = mergeBodyLimits(into.BodyLimits, from.BodyLimits)
	if into.RateLimit == nil {
		into.RateLimit, into.RateLimitPolicy = from.RateLimit, from.RateLimitPolicy
	}
	into.RequestValidation = cmp.Or(into.RequestValidation, from.RequestValidation)
	return into
}

// mergeBodyLimits fills the limits into lacks from from, limit by limit:
// a route's response limit does not drop its service's request limit.
func mergeBodyLimits(into, from *policy.BodyLimits) *policy.BodyLimits {
	if into == nil || from == nil {
		return cmp.Or(into, from)
	}
	return &policy.BodyLimits{
		MaxRequestBytes:  cmp.Or(into.MaxRequestBytes, from.MaxRequestBytes),
		MaxResponseBytes: cmp.Or(into.MaxResponseBytes, from.MaxResponseBytes),
	}
}

// EffectiveRouteTraffic is the traffic of a route: the rule's (from
// HTTPRoute targets), else the gateway port's, else the backend service
// port's, section by section; nil when none has any.
func EffectiveRouteTraffic(levels ...*RouteTraffic) *RouteTraffic {
	var out *RouteTraffic
	for _, l := range levels {
		if l != nil {
			c := *l
			if out == nil {
				out = &c
				continue
			}
			out = mergeRouteTraffic(out, &c)
		}
	}
	return out
}

// mergeClusterTraffic fills what into lacks from from.
func mergeClusterTraffic(into, from *ClusterTraffic) *ClusterTraffic {
	if into == nil {
		c := *from
		return &c
	}
	if into.LB == "" {
		into.LB, into.Hash, into.SlowStart, into.PreferLocal = from.LB, from.Hash, from.SlowStart, from.PreferLocal
	}
	into.ConnectTimeout = cmp.Or(into.ConnectTimeout, from.ConnectTimeout)
	into.IdleTimeout = cmp.Or(into.IdleTimeout, from.IdleTimeout)
	into.CircuitBreaker = cmp.Or(into.CircuitBreaker, from.CircuitBreaker)
	into.RetryBudget = cmp.Or(into.RetryBudget, from.RetryBudget)
	into.Outlier = cmp.Or(into.Outlier, from.Outlier)
	into.HealthCheck = cmp.Or(into.HealthCheck, from.HealthCheck)
	return into
}

// compiledTraffic is one TrafficPolicy, compiled.
type compiledTraffic struct {
	cluster *ClusterTraffic // nil when it sets nothing on clusters
	route   *RouteTraffic   // nil when it sets nothing on routes
}

func duration(d gwapiv1.Duration) (*time.Duration, error) {
	if d == "" {
		return nil, nil
	}
	v, err := policy.ParseDuration(d)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// compileTraffic compiles a TrafficPolicy's sections; openAPIDocument is
// the document of its requestValidation (policy.Set.OpenAPIDocument).
func compileTraffic(tp *policy.TrafficPolicy, openAPIDocument []byte) (*compiledTraffic, error) {
	spec := &tp.Spec
	ct, rt := &ClusterTraffic{}, &RouteTraffic{}
	var errs []error
	dur := func(d gwapiv1.Duration) *time.Duration {
		v, err := duration(d)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	if lb := spec.LoadBalancer; lb != nil {
		ct.LB = cmp.Or(lb.Type, policy.LBRoundRobin)
		if h := lb.Hash; h != nil {
			hp := &HashPolicy{Header: h.Header, SourceIP: h.SourceIP}
			if c := h.Cookie; c != nil {
				hp.Cookie, hp.CookiePath = c.Name, c.Path
				if ttl := dur(c.TTL); ttl != nil {
					hp.CookieTTL = *ttl
				}
			}
			ct.Hash = hp
		}
		if lb.SlowStart != nil {
			ct.SlowStart = dur(lb.SlowStart.Window)
		}
		ct.PreferLocal = lb.Locality != nil && lb.Locality.PreferLocal
	}
	if t := spec.Timeouts; t != nil {
		ct.ConnectTimeout = dur(t.Connect)
		rt.Timeout = dur(t.Request)
		rt.PerTry = dur(t.PerTry)
		if t.Idle != nil {
			ct.IdleTimeout = dur(t.Idle.Upstream)
			rt.StreamIdle = dur(t.Idle.Downstream)
		}
	}
	if r := spec.Retry; r != nil {
		tr := &TrafficRetry{Attempts: 1, RetryOn: r.RetryOn, Methods: r.Methods, AttemptsHeader: r.AttemptsHeader}
		if r.Attempts != nil {
			tr.Attempts = int(*r.Attempts)
		}
		for _, c := range r.RetriableStatusCodes {
			tr.Codes = append(tr.Codes, int(c))
		}
		if len(tr.RetryOn) == 0 {
			tr.RetryOn = []string{"connect-failure", "reset"}
			if len(tr.Codes) > 0 {
				tr.RetryOn = append(tr.RetryOn, "retriable-status-codes")
			}
		}
		if len(tr.Methods) == 0 {
			tr.Methods = policy.IdempotentMethods
		}
		if b := r.Backoff; b != nil {
			if base := dur(b.Base); base != nil {
				tr.BaseBackoff = *base
				tr.MaxBackoff = 10 * *base
			}
			if mx := dur(b.Max); mx != nil {
				tr.MaxBackoff = *mx
			}
		}
		if r.PerTryTimeout != "" {
			rt.PerTry = dur(r.PerTryTimeout)
		}
		rt.Retry = tr
		ct.RetryBudget = r.Budget
	}
	ct.CircuitBreaker = spec.CircuitBreaker
	ct.Outlier = spec.OutlierDetection
	ct.HealthCheck = spec.HealthCheck
	rt.Fault = spec.FaultInjection
	rt.BodyLimits = spec.BodyLimits
	rt.RateLimit = spec.RateLimit
	if rt.RateLimit != nil {
		rt.RateLimitPolicy = orDefault(tp.Namespace) + "/" + tp.Name
	}
	rt.RequestValidation = compileRequestValidation(spec.RequestValidation, openAPIDocument)
	if len(errs) > 0 {
		return nil, fmt.Errorf("trafficpolicy %s/%s: %w", tp.Namespace, tp.Name, errs[0])
	}
	out := &compiledTraffic{}
	if *ct != (ClusterTraffic{}) {
		out.cluster = ct
	}
	if *rt != (RouteTraffic{}) {
		out.route = rt
	}
	return out, nil
}

// trafficPolicies attaches the TrafficPolicies to their targets: a
// Service's ports (their clusters, and the calls to them), a Gateway's
// ports, an HTTPRoute's rules. Targets with a sectionName come first (the
// more specific wins), then policies in namespace/name order: the first
// to set a section keeps it.
func (c *compiler) trafficPolicies() error {
	type ref struct {
		tp  *policy.TrafficPolicy
		ct  *compiledTraffic
		ref policy.TrafficTargetRef
	}
	sorted := slices.Clone(c.set.TrafficPolicies)
	slices.SortStableFunc(sorted, func(a, b *policy.TrafficPolicy) int {
		return cmp.Or(cmp.Compare(orDefault(a.Namespace), orDefault(b.Namespace)), cmp.Compare(a.Name, b.Name))
	})
	var refs []ref
	for _, tp := range sorted {
		ct, err := compileTraffic(tp, c.set.OpenAPIDocument(tp))
		if err != nil {
			c.leaveOut(policy.KindTrafficPolicy, NamespacedName{Namespace: orDefault(tp.Namespace), Name: tp.Name}, tp.Source, err)
			continue
		}
		for _, r := range tp.Spec.TargetRefs {
			refs = append(refs, ref{tp, ct, r})
		}
	}
	slices.SortStableFunc(refs, func(a, b ref) int {
		return cmp.Compare(boolInt(a.ref.SectionName == nil), boolInt(b.ref.SectionName == nil))
	})
	for _, r := range refs {
		target := NamespacedName{Namespace: orDefault(r.tp.Namespace), Name: r.ref.Name}
		section := ""
		if r.ref.SectionName != nil {
			section = string(*r.ref.SectionName)
		}
		switch r.ref.Kind {
		case policy.KindService:
			svc := c.m.services[target]
			if svc == nil {
				continue
			}
			for _, port := range svc.Ports {
				if section != "" && port.Name != section {
					continue
				}
				if r.ct.cluster != nil {
					port.Traffic = mergeClusterTraffic(port.Traffic, r.ct.cluster)
				}
				port.RouteTraffic = mergeRouteTraffic(port.RouteTraffic, r.ct.route)
			}
		case policy.KindGateway:
			gw := c.m.gateways[target]
			if gw == nil || r.ct.route == nil {
				continue
			}
			ports := c.listenerPorts(target, section)
			for _, gp := range gw.Ports {
				if section == "" || slices.Contains(ports, gp.Number) {
					gp.Traffic = mergeRouteTraffic(gp.Traffic, r.ct.route)
				}
			}
		case policy.KindHTTPRoute:
			if r.ct.route == nil {
				continue
			}
			ruleIndex := c.ruleIndex(target, section)
			c.eachRule(func(rule *Rule) {
				if rule.Route == target && (section == "" || rule.RuleIndex == ruleIndex) {
					rule.Traffic = mergeRouteTraffic(rule.Traffic, r.ct.route)
				}
			})
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// listenerPorts is the port of the Gateway's listener named section.
func (c *compiler) listenerPorts(gw NamespacedName, section string) []int32 {
	var out []int32
	for _, pg := range c.set.Gateways {
		if orDefault(pg.Namespace) != gw.Namespace || pg.Name != gw.Name {
			continue
		}
		for _, l := range pg.Spec.Listeners {
			if string(l.Name) == section {
				out = append(out, l.Port)
			}
		}
	}
	return out
}

// ruleIndex is the index of the HTTPRoute's rule named section, or -1.
func (c *compiler) ruleIndex(route NamespacedName, section string) int {
	for _, r := range c.set.HTTPRoutes {
		if routeName(r) != route {
			continue
		}
		return slices.IndexFunc(r.Spec.Rules, func(rule gwapiv1.HTTPRouteRule) bool {
			return rule.Name != nil && string(*rule.Name) == section
		})
	}
	return -1
}

// eachRule calls f with every rule of the model (a rule shared by several
// ports more than once).
func (c *compiler) eachRule(f func(*Rule)) {
	for _, svc := range c.m.Services {
		for _, port := range svc.Ports {
			for _, r := range port.Routes {
				f(r)
			}
			for _, rules := range port.ConsumerRoutes {
				for _, r := range rules {
					f(r)
				}
			}
		}
	}
	for _, gw := range c.m.Gateways {
		for _, gp := range gw.Ports {
			for _, vh := range gp.VirtualHosts {
				for _, r := range vh.Rules {
					f(r)
				}
			}
		}
	}
}
