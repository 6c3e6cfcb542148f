package router

import (
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Retry defaults, Envoy's: one retry when num_retries is unset, and a
// backoff of 25 ms base and 10 times that at most.
const (
	DefaultRetries          = 1
	DefaultRetryBaseBackoff = 25 * time.Millisecond
	retryMaxBackoffFactor   = 10
	// MaxRetries bounds num_retries: each retry is another request to the
	// upstream.
	MaxRetries = 10
	// maxHostSelectionAttempts bounds host_selection_retry_max_attempts.
	maxHostSelectionAttempts = 10
)

// RetryPolicy is a route's compiled retry_policy: when a try failed, and
// how many more tries there are, after what wait. Immutable.
type RetryPolicy struct {
	// Retries is num_retries: the tries after the first.
	Retries int
	// PerTryTimeout bounds each try, from sending the request to the end of
	// the response (0: only the route timeout).
	PerTryTimeout time.Duration
	// BaseBackoff and MaxBackoff are retry_back_off.
	BaseBackoff, MaxBackoff time.Duration
	// OtherHost: previous_hosts, a retry picks an endpoint not tried yet
	// when one of HostSelectionAttempts picks gives one.
	OtherHost             bool
	HostSelectionAttempts int

	// The retry_on conditions.
	on5xx, gatewayError, reset, connectFailure bool
	statusCodes                                []int // retriable-status-codes
	// methods are the methods retried (retriable_request_headers on
	// :method); nil: every one.
	methods []string
}

// RetriesStatus reports whether a try answered with status is retried.
func (p *RetryPolicy) RetriesStatus(status int) bool {
	switch {
	case p.on5xx && status >= 500 && status <= 599:
		return true
	case p.gatewayError && (status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout):
		return true
	}
	return slices.Contains(p.statusCodes, status)
}

// RetriesConnectFailure reports whether a try that could not connect is
// retried (connect-failure, and 5xx and gateway-error, which include it).
func (p *RetryPolicy) RetriesConnectFailure() bool {
	return p.connectFailure || p.on5xx || p.gatewayError
}

// RetriesReset reports whether a try that failed after connecting (a
// reset, a disconnect, its per-try timeout) is retried.
func (p *RetryPolicy) RetriesReset() bool { return p.reset || p.on5xx || p.gatewayError }

// Backoff is the wait before retry n (1 for the first retry). The Gateway
// API makes the base interval a minimum, so the wait is drawn from
// [b, 2b) where b = base·2^(n-1), and capped at the max interval (Envoy
// draws from [0, b) instead, which can wait less than the base). rnd is a
// uniformly random number.
func (p *RetryPolicy) Backoff(n int, rnd uint64) time.Duration {
	if p.BaseBackoff <= 0 {
		return 0
	}
	b := p.BaseBackoff
	for i := 1; i < n && b < p.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, p.MaxBackoff)
	hi, _ := bits.Mul64(rnd, uint64(b))
	return min(b+time.Duration(hi), p.MaxBackoff)
}

// Mirror is one request_mirror_policies entry: a copy of a share of the
// requests goes to Cluster, and its answer is ignored.
type Mirror struct {
	Cluster string
	// numerator/denominator is the share of the requests mirrored;
	// denominator 0 means all of them.
	numerator, denominator uint64
}

// Mirrors reports whether to mirror a request, given a uniformly random
// number.
func (m *Mirror) Mirrors(rnd uint64) bool {
	return m.denominator == 0 || rnd%m.denominator < m.numerator
}

// Retry returns the route's retry policy, nil when it has none.
func (rt *Route) Retry() *RetryPolicy { return rt.retry }

// Mirrors returns the route's request mirror policies (nil: none). The
// caller must not modify the slice.
func (rt *Route) Mirrors() []Mirror { return rt.mirrors }

// HasClusterHeaders reports whether a weighted cluster of the route has
// header lists of its own (ApplyClusterRequestHeaders).
func (rt *Route) HasClusterHeaders() bool { return rt.clusterHeads }

// ApplyClusterRequestHeaders applies the request header lists of the
// weighted cluster named cluster, if it has any, to h: before the route's,
// as Envoy applies the most specific level first.
func (rt *Route) ApplyClusterRequestHeaders(cluster string, h http.Header) {
	if !rt.clusterHeads {
		return
	}
	for i := range rt.weighted {
		if rt.weighted[i].name == cluster {
			rt.weighted[i].requestHeads.Apply(h)
			return
		}
	}
}

// ApplyClusterResponseHeaders applies the response header lists of the
// weighted cluster named cluster, if it has any, to h.
func (rt *Route) ApplyClusterResponseHeaders(cluster string, h http.Header) {
	if !rt.clusterHeads {
		return
	}
	for i := range rt.weighted {
		if rt.weighted[i].name == cluster {
			rt.weighted[i].responseHeads.Apply(h)
			return
		}
	}
}

// compileClusterHeaders compiles the header lists of weighted cluster i.
func compileClusterHeaders(rt *Route, i int, cw *routev3.WeightedCluster_ClusterWeight) error {
	req, err := compileHeaderMutation(cw.GetRequestHeadersToAdd(), cw.GetRequestHeadersToRemove(), true)
	if err != nil {
		return fmt.Errorf("weighted_clusters.clusters[%d].%w", i, err)
	}
	resp, err := compileHeaderMutation(cw.GetResponseHeadersToAdd(), cw.GetResponseHeadersToRemove(), false)
	if err != nil {
		return fmt.Errorf("weighted_clusters.clusters[%d].%w", i, err)
	}
	rt.weighted[i].requestHeads, rt.weighted[i].responseHeads = req, resp
	if !req.Empty() || !resp.Empty() {
		rt.clusterHeads = true
	}
	return nil
}

// compileTraffic compiles the retry policy and the mirror policies of a
// route action.
func compileTraffic(rt *Route, ra *routev3.RouteAction) error {
	if rp := ra.GetRetryPolicy(); rp != nil {
		p, err := compileRetryPolicy(rp)
		if err != nil {
			return fmt.Errorf("retry_policy.%w", err)
		}
		rt.retry = p
	}
	for i, mp := range ra.GetRequestMirrorPolicies() {
		m, err := compileMirror(mp)
		if err != nil {
			return fmt.Errorf("request_mirror_policies[%d].%w", i, err)
		}
		rt.mirrors = append(rt.mirrors, m)
	}
	return compilePolicyTraffic(rt, ra)
}

func compileRetryPolicy(rp *routev3.RetryPolicy) (*RetryPolicy, error) {
	p := &RetryPolicy{Retries: DefaultRetries}
	if n := rp.GetNumRetries(); n != nil {
		if n.GetValue() > MaxRetries {
			return nil, fmt.Errorf("num_retries: %d is more than %d", n.GetValue(), MaxRetries)
		}
		p.Retries = int(n.GetValue())
	}
	if d := rp.GetPerTryTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("per_try_timeout: invalid duration %v", d)
		}
		p.PerTryTimeout = d.AsDuration()
	}
	if rp.GetRetryOn() != "" {
		for c := range strings.SplitSeq(rp.GetRetryOn(), ",") {
			switch strings.TrimSpace(c) {
			case "5xx":
				p.on5xx = true
			case "gateway-error":
				p.gatewayError = true
			case "reset":
				p.reset = true
			case "connect-failure":
				p.connectFailure = true
			case "retriable-status-codes":
				for _, code := range rp.GetRetriableStatusCodes() {
					if code < 100 || code > 599 {
						return nil, fmt.Errorf("retriable_status_codes: %d is not a status code", code)
					}
					p.statusCodes = append(p.statusCodes, int(code))
				}
			default:
				return nil, fmt.Errorf("retry_on: condition %q not supported", c)
			}
		}
	}
	p.BaseBackoff, p.MaxBackoff = DefaultRetryBaseBackoff, DefaultRetryBaseBackoff*retryMaxBackoffFactor
	if bo := rp.GetRetryBackOff(); bo != nil {
		base := bo.GetBaseInterval()
		if err := base.CheckValid(); err != nil || base.AsDuration() < time.Millisecond {
			return nil, fmt.Errorf("retry_back_off.base_interval: invalid duration %v (at least 1ms)", base)
		}
		p.BaseBackoff, p.MaxBackoff = base.AsDuration(), base.AsDuration()*retryMaxBackoffFactor
		if m := bo.GetMaxInterval(); m != nil {
			if err := m.CheckValid(); err != nil || m.AsDuration() < p.BaseBackoff {
				return nil, fmt.Errorf("retry_back_off.max_interval: invalid duration %v (at least base_interval)", m)
			}
			p.MaxBackoff = m.AsDuration()
		}
	}
	if len(rp.GetRetryHostPredicate()) > 0 {
		p.OtherHost = true
		p.HostSelectionAttempts = min(max(int(rp.GetHostSelectionRetryMaxAttempts()), 1), maxHostSelectionAttempts)
	}
	return p, nil
}

func compileMirror(mp *routev3.RouteAction_RequestMirrorPolicy) (Mirror, error) {
	if mp.GetCluster() == "" {
		return Mirror{}, errors.New("cluster: required")
	}
	m := Mirror{Cluster: mp.GetCluster()}
	if rf := mp.GetRuntimeFraction(); rf != nil {
		dv := rf.GetDefaultValue()
		switch dv.GetDenominator() {
		case typev3.FractionalPercent_HUNDRED:
			m.denominator = 100
		case typev3.FractionalPercent_TEN_THOUSAND:
			m.denominator = 10_000
		case typev3.FractionalPercent_MILLION:
			m.denominator = 1_000_000
		default:
			return Mirror{}, fmt.Errorf("runtime_fraction.default_value.denominator: %v not supported", dv.GetDenominator())
		}
		m.numerator = uint64(dv.GetNumerator())
		if m.numerator >= m.denominator {
			m.denominator = 0 // all of them, as Envoy caps the share at 100%
		}
	}
	return m, nil
}
