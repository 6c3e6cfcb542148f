// Package globalratelimit is the rate limit HTTP filter
// (envoy.extensions.filters.http.ratelimit.v3.RateLimit, Envoy's
// envoy.filters.http.ratelimit): on a route whose RateLimitPerRoute
// (typed_per_filter_config under the filter's name) has rate_limits, it
// makes the request's descriptors from their actions and asks the rate
// limit service (envoy.service.ratelimit.v3.RateLimitService, meshgate
// ratelimit) whether the request is over a limit shared by every proxy.
// OVER_LIMIT is answered 429 with x-envoy-ratelimited (and Retry-After with
// enable_retry_after_header); with enable_x_ratelimit_headers
// DRAFT_VERSION_03 the responses carry X-RateLimit-Limit, -Remaining and
// -Reset, and the IETF RateLimit-Policy and RateLimit, of the descriptor
// closest to its limit. When the service fails or does not answer within
// timeout (default 20ms, Envoy's), failure_mode_deny answers 500, else the
// request goes on; both are counted in /stats (ratelimit: error,
// failure_mode_allowed; over_limit counts the 429s).
//
// The service is a google_grpc target_uri the proxy dials itself
// (plaintext, one connection per listener configuration, idle after a
// minute unused). A route without rate_limits costs nothing.
package globalratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"time"

	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/filters/internal/descriptor"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// StatRateLimit is the /stats family of the filter: keys "over_limit"
// (429s), "error" (the service failed or timed out) and
// "failure_mode_allowed" (such requests let through).
const StatRateLimit = "ratelimit"

const (
	statOverLimit = "over_limit"
	statError     = "error"
	statAllowed   = "failure_mode_allowed"
)

// Defaults and bounds.
const (
	defaultTimeout = 20 * time.Millisecond
	maxTimeout     = 10 * time.Second
	idleTimeout    = time.Minute
)

// Factory describes the rate limit filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		Stats:        []string{StatRateLimit, httpfilter.StatConsumerRateLimited},
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// Checker asks the rate limit service (the generated gRPC client, or a
// fake in tests).
type Checker interface {
	ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest, opts ...grpc.CallOption) (*rlsv3.RateLimitResponse, error)
}

// filter is one rate limit http_filters entry.
type filter struct {
	name       string
	domain     string
	timeout    time.Duration
	failDeny   bool
	headers    bool
	retryAfter bool
	client     Checker
	stats      *httpfilter.Counters
	// consumers counts the 429s of declared consumers
	// (httpfilter.StatConsumerRateLimited).
	consumers *httpfilter.Counters
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*ratelimitv3.RateLimit)
	if !ok {
		return nil, fmt.Errorf("want a RateLimit, got %T", config)
	}
	f := &filter{
		name: name, domain: cfg.GetDomain(), timeout: defaultTimeout, failDeny: cfg.GetFailureModeDeny(),
		headers:    cfg.GetEnableXRatelimitHeaders() == ratelimitv3.RateLimit_DRAFT_VERSION_03,
		retryAfter: cfg.GetEnableRetryAfterHeader(),
		stats:      env.Stats.Counters(StatRateLimit),
		consumers:  env.Stats.Counters(httpfilter.StatConsumerRateLimited),
	}
	if d := cfg.GetTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 || d.AsDuration() > maxTimeout {
			return nil, fmt.Errorf("ratelimit: timeout: %v: want more than 0, at most %v", d.AsDuration(), maxTimeout)
		}
		f.timeout = d.AsDuration()
	}
	target := cfg.GetRateLimitService().GetGrpcService().GetGoogleGrpc().GetTargetUri()
	if target == "" {
		return nil, errors.New("ratelimit: rate_limit_service.grpc_service.google_grpc.target_uri: required")
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithIdleTimeout(idleTimeout))
	if err != nil {
		return nil, fmt.Errorf("ratelimit: rate_limit_service: %w", err)
	}
	f.client = rlsv3.NewRateLimitServiceClient(conn)
	// The filter lives as long as its listener's configuration: its
	// connection closes when the configuration is swapped out and dropped.
	runtime.AddCleanup(f, func(c *grpc.ClientConn) { _ = c.Close() }, conn)
	return f, nil
}

// perRoute is a compiled RateLimitPerRoute: the rate_limits' actions.
type perRoute struct {
	actions [][]descriptor.Action
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*ratelimitv3.RateLimitPerRoute)
	if !ok {
		return nil, fmt.Errorf("want a RateLimitPerRoute, got %T", config)
	}
	p := &perRoute{}
	for i, rl := range cfg.GetRateLimits() {
		acts, err := descriptor.Compile(rl)
		if err != nil {
			return nil, fmt.Errorf("ratelimit.rate_limits[%d].%w", i, err)
		}
		p.actions = append(p.actions, acts)
	}
	return p, nil
}

// Wrap returns the handler asking the service before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP asks the service about r's descriptors when rt has rate
// limits.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	var per *perRoute
	if rt != nil {
		per, _ = rt.PerFilterConfig(h.name).(*perRoute)
	}
	if per == nil || len(per.actions) == 0 {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	req := &rlsv3.RateLimitRequest{Domain: h.domain, HitsAddend: 1}
	var buf [descriptor.MaxActions]descriptor.Entry
	for _, acts := range per.actions {
		entries, ok := descriptor.Make(r, acts, buf[:0])
		if !ok {
			continue
		}
		d := &ratelimitcommonv3.RateLimitDescriptor{}
		for _, e := range entries {
			d.Entries = append(d.Entries, &ratelimitcommonv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	if len(req.Descriptors) == 0 {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	resp, err := h.client.ShouldRateLimit(ctx, req)
	cancel()
	if err != nil {
		h.stats.Inc(statError)
		if h.failDeny {
			httpfilter.LocalReply(w, rt, http.StatusInternalServerError, "")
			return
		}
		h.stats.Inc(statAllowed)
		h.next.ServeHTTP(w, r, rt)
		return
	}
	tightest := tightestStatus(resp)
	if h.headers && tightest != nil {
		setHeaders(w.Header(), tightest)
	}
	if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
		h.stats.Inc(statOverLimit)
		httpfilter.CountConsumerRateLimited(r.Context(), h.consumers)
		w.Header()["X-Envoy-Ratelimited"] = []string{"true"}
		if h.retryAfter && tightest != nil {
			w.Header()["Retry-After"] = []string{strconv.Itoa(max(1, ceilSeconds(tightest.GetDurationUntilReset().AsDuration())))}
		}
		httpfilter.LocalReply(w, rt, http.StatusTooManyRequests, "")
		return
	}
	h.next.ServeHTTP(w, r, rt)
}

// tightestStatus is the status with a limit closest to it: an OVER_LIMIT
// one first, else the fewest remaining; nil when none has a limit.
func tightestStatus(resp *rlsv3.RateLimitResponse) *rlsv3.RateLimitResponse_DescriptorStatus {
	var out *rlsv3.RateLimitResponse_DescriptorStatus
	for _, st := range resp.GetStatuses() {
		if st.GetCurrentLimit() == nil {
			continue
		}
		if st.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			return st
		}
		if out == nil || st.GetLimitRemaining() < out.GetLimitRemaining() {
			out = st
		}
	}
	return out
}

func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// unitSeconds is the window of a limit's unit, in seconds.
func unitSeconds(u rlsv3.RateLimitResponse_RateLimit_Unit) int {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return 60
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return 3600
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 86400
	}
	return 1
}

// setHeaders sets the draft-03 and IETF headers of a descriptor status.
func setHeaders(h http.Header, st *rlsv3.RateLimitResponse_DescriptorStatus) {
	lim := st.GetCurrentLimit()
	n := strconv.FormatUint(uint64(lim.GetRequestsPerUnit()), 10)
	w := strconv.Itoa(unitSeconds(lim.GetUnit()))
	remaining := strconv.FormatUint(uint64(st.GetLimitRemaining()), 10)
	reset := strconv.Itoa(ceilSeconds(st.GetDurationUntilReset().AsDuration()))
	h["X-Ratelimit-Limit"] = []string{n + ", " + n + ";w=" + w}
	h["X-Ratelimit-Remaining"] = []string{remaining}
	h["X-Ratelimit-Reset"] = []string{reset}
	h["Ratelimit-Policy"] = []string{`"global";q=` + n + ";w=" + w}
	h["Ratelimit"] = []string{`"global";r=` + remaining + ";t=" + reset}
}
