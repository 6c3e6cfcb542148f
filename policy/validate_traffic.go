package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Limits of a TrafficPolicy's values.
const (
	// MaxTrafficRetries bounds retry.attempts: each retry is another request.
	MaxTrafficRetries = 10
	// MaxBodyLimit bounds bodyLimits (1 GiB).
	MaxBodyLimit = 1 << 30
)

// validateTrafficPolicies checks every well-formed TrafficPolicy against
// the resources it targets.
func (l *loader) validateTrafficPolicies(ix *setIndex) {
	slices.SortFunc(l.set.TrafficPolicies, func(a, b *TrafficPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, tp := range l.set.TrafficPolicies {
		if l.malformed[resourceKey{KindTrafficPolicy, tp.Namespace, tp.Name}] {
			continue
		}
		l.checkTrafficPolicy(tp, ix)
	}
}

func (l *loader) checkTrafficPolicy(tp *TrafficPolicy, ix *setIndex) {
	src, spec := tp.Source, &tp.Spec
	if len(spec.TargetRefs) == 0 {
		l.errorf(src, "spec.targetRefs", "at least one targetRef is required (a Service, Gateway or HTTPRoute)")
	}
	if spec.LoadBalancer == nil && spec.Timeouts == nil && spec.Retry == nil && spec.CircuitBreaker == nil &&
		spec.OutlierDetection == nil && spec.HealthCheck == nil && spec.FaultInjection == nil && spec.BodyLimits == nil && spec.RateLimit == nil &&
		spec.RequestValidation == nil {
		l.errorf(src, "spec", "a TrafficPolicy needs at least one of loadBalancer, timeouts, retry, circuitBreaker, outlierDetection, healthCheck, faultInjection, bodyLimits, rateLimit, requestValidation")
	}
	nonService := -1
	seen := make(map[string]int)
	var targetKinds []string
	for i, ref := range spec.TargetRefs {
		p := fmt.Sprintf("spec.targetRefs[%d]", i)
		kind, ok := l.checkTargetRef(src, p, PolicyTargetRef{Group: ref.Group, Kind: ref.Kind, Name: ref.Name})
		targetKinds = append(targetKinds, kind)
		if !ok {
			continue
		}
		if kind != KindService && nonService < 0 {
			nonService = i
		}
		key := kind + "/" + ref.Name
		if ref.SectionName != nil {
			key += "/" + string(*ref.SectionName)
		}
		if j, dup := seen[key]; dup {
			l.errorf(src, p, "duplicate target %s %q (also spec.targetRefs[%d])", kind, ref.Name, j)
			continue
		}
		seen[key] = i
		l.checkTrafficTarget(tp, p, kind, ref, ix)
	}
	// Sections that configure the cluster of a service port apply to
	// Service targets only: every caller shares that cluster.
	if nonService >= 0 {
		other := fmt.Sprintf("(spec.targetRefs[%d] is a %s)", nonService, spec.TargetRefs[nonService].Kind)
		clusterOnly := func(field string) {
			l.errorf(src, field, "%s applies to Service targets only: it configures the service's cluster, shared by every caller %s", field[len("spec."):], other)
		}
		if spec.LoadBalancer != nil {
			clusterOnly("spec.loadBalancer")
		}
		if spec.CircuitBreaker != nil {
			clusterOnly("spec.circuitBreaker")
		}
		if spec.OutlierDetection != nil {
			clusterOnly("spec.outlierDetection")
		}
		if spec.HealthCheck != nil {
			clusterOnly("spec.healthCheck")
		}
		if t := spec.Timeouts; t != nil && t.Connect != "" {
			clusterOnly("spec.timeouts.connect")
		}
		if t := spec.Timeouts; t != nil && t.Idle != nil && t.Idle.Upstream != "" {
			clusterOnly("spec.timeouts.idle.upstream")
		}
		if r := spec.Retry; r != nil && r.Budget != nil {
			clusterOnly("spec.retry.budget")
		}
	}
	if spec.LoadBalancer != nil {
		l.checkLoadBalancer(src, spec.LoadBalancer)
	}
	if spec.Timeouts != nil {
		l.checkTrafficTimeouts(src, spec.Timeouts)
	}
	if spec.Retry != nil {
		l.checkTrafficRetry(src, spec.Retry, spec.Timeouts)
	}
	if spec.CircuitBreaker != nil {
		cb := spec.CircuitBreaker
		l.checkPositive(src, "spec.circuitBreaker.maxConnections", cb.MaxConnections)
		l.checkPositive(src, "spec.circuitBreaker.maxPendingRequests", cb.MaxPendingRequests)
		l.checkPositive(src, "spec.circuitBreaker.maxRequests", cb.MaxRequests)
		l.checkPositive(src, "spec.circuitBreaker.maxRetries", cb.MaxRetries)
	}
	if spec.OutlierDetection != nil {
		l.checkOutlierDetection(src, spec.OutlierDetection)
	}
	if spec.HealthCheck != nil {
		l.checkHealthCheck(src, spec.HealthCheck)
	}
	if spec.FaultInjection != nil {
		l.checkFaultInjection(src, spec.FaultInjection)
	}
	if spec.RateLimit != nil {
		l.checkRateLimit(src, spec.RateLimit)
	}
	if spec.RequestValidation != nil {
		l.checkRequestValidation(tp, targetKinds)
	}
	if b := spec.BodyLimits; b != nil {
		if b.MaxRequestBytes == nil && b.MaxResponseBytes == nil {
			l.errorf(src, "spec.bodyLimits", "bodyLimits needs maxRequestBytes, maxResponseBytes or both")
		}
		for _, f := range []struct {
			name  string
			value *int64
		}{{"maxRequestBytes", b.MaxRequestBytes}, {"maxResponseBytes", b.MaxResponseBytes}} {
			if v := f.value; v != nil && (*v < 1 || *v > MaxBodyLimit) {
				l.errorf(src, "spec.bodyLimits."+f.name, "%d bytes: want 1 to %d", *v, MaxBodyLimit)
			}
		}
	}
}

// checkTrafficTarget resolves one target (and its sectionName).
func (l *loader) checkTrafficTarget(tp *TrafficPolicy, p, kind string, ref TrafficTargetRef, ix *setIndex) {
	src := tp.Source
	target := nsName{tp.Namespace, ref.Name}
	section := ""
	if ref.SectionName != nil {
		section = string(*ref.SectionName)
	}
	switch kind {
	case KindService:
		svc := ix.services[target]
		if svc == nil {
			l.refErrorf(src, p+".name", ReasonTargetNotFound, "service %q not found in namespace %q%s", ref.Name, tp.Namespace, l.rejectedNote(KindService, tp.Namespace, ref.Name))
			return
		}
		if section != "" && !slices.ContainsFunc(svc.Spec.Ports, func(sp ServicePort) bool { return sp.Name == section }) {
			l.refErrorf(src, p+".sectionName", ReasonTargetNotFound, "service %q has no port named %q", ref.Name, section)
		}
	case KindGateway:
		gw := ix.gateways[target]
		if gw == nil {
			l.refErrorf(src, p+".name", ReasonTargetNotFound, "gateway %q not found in namespace %q%s", ref.Name, tp.Namespace, l.rejectedNote(KindGateway, tp.Namespace, ref.Name))
			return
		}
		if section != "" && !slices.ContainsFunc(gw.Spec.Listeners, func(ls gwapiv1.Listener) bool { return string(ls.Name) == section }) {
			l.refErrorf(src, p+".sectionName", ReasonTargetNotFound, "gateway %q has no listener named %q", ref.Name, section)
		}
	case KindHTTPRoute:
		if !ix.routes[target] {
			l.refErrorf(src, p+".name", ReasonTargetNotFound, "httproute %q not found in namespace %q%s", ref.Name, tp.Namespace, l.rejectedNote(KindHTTPRoute, tp.Namespace, ref.Name))
			return
		}
		if section == "" {
			return
		}
		i := slices.IndexFunc(l.set.HTTPRoutes, func(r *HTTPRoute) bool { return r.Namespace == tp.Namespace && r.Name == ref.Name })
		if i < 0 || !slices.ContainsFunc(l.set.HTTPRoutes[i].Spec.Rules, func(r gwapiv1.HTTPRouteRule) bool {
			return r.Name != nil && string(*r.Name) == section
		}) {
			l.refErrorf(src, p+".sectionName", ReasonTargetNotFound, "httproute %q has no rule named %q", ref.Name, section)
		}
	}
}

func (l *loader) checkLoadBalancer(src Source, lb *LoadBalancer) {
	typ := lb.Type
	if typ == "" {
		typ = LBRoundRobin
	}
	if !slices.Contains(LBTypes, typ) {
		l.errorf(src, "spec.loadBalancer.type", "unknown type %q (want %s)", lb.Type, orList(LBTypes))
		return
	}
	hashing := typ == LBRingHash || typ == LBMaglev
	switch {
	case hashing && lb.Hash == nil:
		l.errorf(src, "spec.loadBalancer.hash", "type %s needs hash (header, cookie or sourceIP)", typ)
	case !hashing && lb.Hash != nil:
		l.errorf(src, "spec.loadBalancer.hash", "hash applies to RingHash and Maglev only, not %s", typ)
	case lb.Hash != nil:
		h := lb.Hash
		n := 0
		if h.Header != "" {
			n++
			if msg := checkHeaderName(h.Header); msg != "" {
				l.errorf(src, "spec.loadBalancer.hash.header", "%s", msg)
			}
		}
		if h.Cookie != nil {
			n++
			c := h.Cookie
			if c.Name == "" || strings.ContainsAny(c.Name, "=;, \t\"") {
				l.errorf(src, "spec.loadBalancer.hash.cookie.name", "invalid cookie name %q", c.Name)
			}
			if c.TTL != "" {
				l.checkDuration(src, "spec.loadBalancer.hash.cookie.ttl", c.TTL, time.Second)
			}
			if c.Path != "" && (!strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, ";\r\n")) {
				l.errorf(src, "spec.loadBalancer.hash.cookie.path", "invalid cookie path %q: want an absolute path", c.Path)
			}
		}
		if h.SourceIP {
			n++
		}
		if n != 1 {
			l.errorf(src, "spec.loadBalancer.hash", "exactly one of header, cookie and sourceIP is required")
		}
	}
	if lb.SlowStart != nil {
		if typ != LBRoundRobin && typ != LBLeastRequest {
			l.errorf(src, "spec.loadBalancer.slowStart", "slowStart applies to RoundRobin and LeastRequest only, not %s", typ)
		}
		l.checkDuration(src, "spec.loadBalancer.slowStart.window", lb.SlowStart.Window, time.Millisecond)
	}
	if lb.Locality != nil && !lb.Locality.PreferLocal {
		l.errorf(src, "spec.loadBalancer.locality.preferLocal", "must be true (leave locality out otherwise)")
	}
}

func (l *loader) checkTrafficTimeouts(src Source, t *TrafficTimeouts) {
	for field, d := range map[string]gwapiv1.Duration{"connect": t.Connect, "request": t.Request, "perTry": t.PerTry} {
		if d != "" {
			l.checkDuration(src, "spec.timeouts."+field, d, time.Millisecond)
		}
	}
	if t.Idle != nil {
		if t.Idle.Upstream == "" && t.Idle.Downstream == "" {
			l.errorf(src, "spec.timeouts.idle", "idle needs upstream, downstream or both")
		}
		for field, d := range map[string]gwapiv1.Duration{"upstream": t.Idle.Upstream, "downstream": t.Idle.Downstream} {
			if d != "" {
				l.checkDuration(src, "spec.timeouts.idle."+field, d, time.Millisecond)
			}
		}
	}
}

func (l *loader) checkTrafficRetry(src Source, r *TrafficRetry, t *TrafficTimeouts) {
	if r.Attempts != nil && (*r.Attempts < 0 || *r.Attempts > MaxTrafficRetries) {
		l.errorf(src, "spec.retry.attempts", "%d attempts: want 0 to %d", *r.Attempts, MaxTrafficRetries)
	}
	if r.PerTryTimeout != "" {
		l.checkDuration(src, "spec.retry.perTryTimeout", r.PerTryTimeout, time.Millisecond)
		if t != nil && t.PerTry != "" {
			l.errorf(src, "spec.retry.perTryTimeout", "set timeouts.perTry or retry.perTryTimeout, not both")
		}
	}
	codesWanted := false
	for i, c := range r.RetryOn {
		if !slices.Contains(RetryOnConditions, c) {
			l.errorf(src, fmt.Sprintf("spec.retry.retryOn[%d]", i), "unknown condition %q (want %s)", c, orList(RetryOnConditions))
		}
		codesWanted = codesWanted || c == "retriable-status-codes"
	}
	for i, c := range r.RetriableStatusCodes {
		if c < 400 || c > 599 {
			l.errorf(src, fmt.Sprintf("spec.retry.retriableStatusCodes[%d]", i), "status %d: want 400 to 599", c)
		}
	}
	if codesWanted && len(r.RetriableStatusCodes) == 0 {
		l.errorf(src, "spec.retry.retriableStatusCodes", "retryOn retriable-status-codes needs retriableStatusCodes")
	}
	if b := r.Backoff; b != nil {
		base, okBase := l.checkDuration(src, "spec.retry.backoff.base", b.Base, time.Millisecond)
		if b.Max != "" {
			if mx, ok := l.checkDuration(src, "spec.retry.backoff.max", b.Max, time.Millisecond); ok && okBase && mx < base {
				l.errorf(src, "spec.retry.backoff.max", "max %s is shorter than base %s", b.Max, b.Base)
			}
		}
	}
	if b := r.Budget; b != nil {
		if b.Percent != nil && !(*b.Percent > 0 && *b.Percent <= 100) {
			l.errorf(src, "spec.retry.budget.percent", "percent %v: want more than 0, at most 100", *b.Percent)
		}
		if b.MinConcurrency != nil && *b.MinConcurrency < 0 {
			l.errorf(src, "spec.retry.budget.minConcurrency", "%d: want 0 or more", *b.MinConcurrency)
		}
	}
	for i, m := range r.Methods {
		if !slices.Contains(httpMethods, m) {
			l.errorf(src, fmt.Sprintf("spec.retry.methods[%d]", i), "unknown method %q (want %s)", m, strings.Join(httpMethods, ", "))
		}
	}
}

func (l *loader) checkOutlierDetection(src Source, o *OutlierDetection) {
	p := "spec.outlierDetection."
	l.checkPositive(src, p+"consecutive5xx", o.Consecutive5xx)
	l.checkPositive(src, p+"consecutiveGatewayErrors", o.ConsecutiveGatewayErrors)
	if s := o.SuccessRate; s != nil {
		l.checkPositive(src, p+"successRate.minHosts", s.MinHosts)
		l.checkPositive(src, p+"successRate.requestVolume", s.RequestVolume)
		l.checkPositive(src, p+"successRate.stdevFactor", s.StdevFactor)
	}
	if f := o.FailurePercentage; f != nil {
		if f.Threshold != nil && (*f.Threshold < 0 || *f.Threshold > 100) {
			l.errorf(src, p+"failurePercentage.threshold", "threshold %d: want 0 to 100", *f.Threshold)
		}
		l.checkPositive(src, p+"failurePercentage.minHosts", f.MinHosts)
		l.checkPositive(src, p+"failurePercentage.requestVolume", f.RequestVolume)
	}
	if o.Interval != "" {
		l.checkDuration(src, p+"interval", o.Interval, time.Millisecond)
	}
	if o.BaseEjectionTime != "" {
		l.checkDuration(src, p+"baseEjectionTime", o.BaseEjectionTime, time.Millisecond)
	}
	if v := o.MaxEjectionPercent; v != nil && (*v < 0 || *v > 100) {
		l.errorf(src, p+"maxEjectionPercent", "%d: want 0 to 100", *v)
	}
}

func (l *loader) checkHealthCheck(src Source, h *HealthCheck) {
	p := "spec.healthCheck."
	if (h.HTTP == nil) == (h.TCP == nil) {
		l.errorf(src, "spec.healthCheck", "exactly one of http and tcp is required")
	}
	if hh := h.HTTP; hh != nil {
		if !strings.HasPrefix(hh.Path, "/") || strings.ContainsAny(hh.Path, " \r\n") {
			l.errorf(src, p+"http.path", "invalid path %q: want an absolute path", hh.Path)
		}
		if hh.Host != "" {
			if msg := checkSubdomain(hh.Host); msg != "" {
				l.errorf(src, p+"http.host", "invalid host %q: %s", hh.Host, msg)
			}
		}
		for i, s := range hh.ExpectedStatuses {
			if s < 100 || s > 599 {
				l.errorf(src, fmt.Sprintf("%shttp.expectedStatuses[%d]", p, i), "status %d: want 100 to 599", s)
			}
		}
	}
	l.checkDuration(src, p+"interval", h.Interval, time.Millisecond)
	l.checkDuration(src, p+"timeout", h.Timeout, time.Millisecond)
	if h.Jitter != "" {
		l.checkDuration(src, p+"jitter", h.Jitter, time.Millisecond)
	}
	l.checkPositive(src, p+"healthyThreshold", h.HealthyThreshold)
	l.checkPositive(src, p+"unhealthyThreshold", h.UnhealthyThreshold)
}

func (l *loader) checkFaultInjection(src Source, f *FaultInjection) {
	p := "spec.faultInjection."
	if f.Delay == nil && f.Abort == nil {
		l.errorf(src, "spec.faultInjection", "faultInjection needs delay, abort or both")
	}
	percent := func(field string, v float64) {
		if !(v > 0 && v <= 100) {
			l.errorf(src, p+field, "percent %v: want more than 0, at most 100", v)
		}
	}
	if d := f.Delay; d != nil {
		l.checkDuration(src, p+"delay.fixed", d.Fixed, time.Millisecond)
		percent("delay.percent", d.Percent)
	}
	if a := f.Abort; a != nil {
		switch {
		case (a.HTTPStatus == nil) == (a.GRPCStatus == nil):
			l.errorf(src, p+"abort", "exactly one of httpStatus and grpcStatus is required")
		case a.HTTPStatus != nil && (*a.HTTPStatus < 200 || *a.HTTPStatus > 599):
			l.errorf(src, p+"abort.httpStatus", "status %d: want 200 to 599", *a.HTTPStatus)
		case a.GRPCStatus != nil && (*a.GRPCStatus < 1 || *a.GRPCStatus > 16):
			l.errorf(src, p+"abort.grpcStatus", "gRPC status %d: want 1 to 16", *a.GRPCStatus)
		}
		percent("abort.percent", a.Percent)
	}
	if h := f.OnlyWithHeader; h != nil {
		if msg := checkHeaderName(h.Name); msg != "" {
			l.errorf(src, p+"onlyWithHeader.name", "%s", msg)
		}
		if h.Value == "" {
			l.errorf(src, p+"onlyWithHeader.value", "value is required")
		}
	}
}

// checkDuration parses a Gateway API duration of at least least.
func (l *loader) checkDuration(src Source, field string, d gwapiv1.Duration, least time.Duration) (time.Duration, bool) {
	if d == "" {
		l.errorf(src, field, "duration is required")
		return 0, false
	}
	v, err := ParseDuration(d)
	if err != nil {
		l.errorf(src, field, "%v", err)
		return 0, false
	}
	if v < least {
		l.errorf(src, field, "%s is shorter than %s", d, least)
		return 0, false
	}
	return v, true
}

// checkPositive requires an optional count to be at least 1.
func (l *loader) checkPositive(src Source, field string, v *int32) {
	if v != nil && *v < 1 {
		l.errorf(src, field, "%d: want 1 or more", *v)
	}
}
