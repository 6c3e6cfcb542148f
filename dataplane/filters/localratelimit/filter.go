// Package localratelimit is the local rate limit HTTP filter
// (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, Envoy's
// envoy.filters.http.local_ratelimit): token buckets kept by this proxy
// alone, one for the route (token_bucket) and one per descriptor a request
// matches, made by the config's rate_limits actions (generic_key,
// remote_address, masked_remote_address, request_headers, metadata). A descriptor
// entry without a value is a wildcard: each distinct value gets its own
// bucket, at most max_dynamic_descriptors per descriptor, the least
// recently used dropped first, so that a flood of keys cannot exhaust the
// proxy's memory. A per-route LocalRateLimit (typed_per_filter_config under
// the filter's name) replaces the listener's on that route, and its
// buckets are the route's.
//
// A request that a bucket refuses is answered 429 with the body
// "local_rate_limited" (when filter_enforced is 100%). With
// enable_retry_after_header the 429 carries Retry-After (seconds until the
// refusing bucket has a token, at least 1). With enable_x_ratelimit_headers
// DRAFT_VERSION_03 every response of the route carries, for the bucket
// closest to its limit (the refusing one on a 429), the draft-03 headers
// Envoy sends (X-RateLimit-Limit "burst, requests;w=seconds",
// X-RateLimit-Remaining, X-RateLimit-Reset: seconds until the bucket is
// full) and the same as the IETF draft's (draft-ietf-httpapi-ratelimit-
// headers) structured fields: RateLimit-Policy `"name";q=requests;w=seconds`
// and RateLimit `"name";r=remaining;t=seconds`, where name is the rule
// ("default" for the token_bucket, else the descriptor's non-empty values
// joined by dots, as "rule-0").
//
// Buckets refill continuously (golang.org/x/time/rate): tokens_per_fill
// per fill_interval, holding at most max_tokens, full at start.
package localratelimit

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/filters/internal/descriptor"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// StatLocalRateLimit is the /stats family of the filter: key
// "rate_limited" counts the requests a bucket refused.
const StatLocalRateLimit = "local_rate_limit"

const statRateLimited = "rate_limited"

// bodyLimited is the body of a 429, Envoy's.
const bodyLimited = "local_rate_limited"

// Response headers.
const (
	headerLimit      = "X-Ratelimit-Limit"
	headerRemaining  = "X-Ratelimit-Remaining"
	headerReset      = "X-Ratelimit-Reset"
	headerIETFPolicy = "Ratelimit-Policy"
	headerIETFLimit  = "Ratelimit"
	headerRetryAfter = "Retry-After"
)

// Factory describes the local rate limit filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: configType,
		Rules:        subsetRules(),
		Stats:        []string{StatLocalRateLimit, httpfilter.StatConsumerRateLimited},
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// filter is one local rate limit http_filters entry.
type filter struct {
	name   string
	limits *limits
	stats  *httpfilter.Counters
	// consumers counts the 429s of declared consumers
	// (httpfilter.StatConsumerRateLimited).
	consumers *httpfilter.Counters
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*localratelimitv3.LocalRateLimit)
	if !ok {
		return nil, fmt.Errorf("want a LocalRateLimit, got %T", config)
	}
	l, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("local_ratelimit: %w", err)
	}
	return &filter{name: name, limits: l, stats: env.Stats.Counters(StatLocalRateLimit),
		consumers: env.Stats.Counters(httpfilter.StatConsumerRateLimited)}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*localratelimitv3.LocalRateLimit)
	if !ok {
		return nil, fmt.Errorf("want a LocalRateLimit, got %T", config)
	}
	l, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("local_ratelimit.%w", err)
	}
	return l, nil
}

// Wrap returns the handler applying the limits before next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP takes a token from each bucket of r (rt's per-route limits,
// else the listener's) and answers 429 when one has none.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	l := h.limits
	if rt != nil {
		if per, ok := rt.PerFilterConfig(h.name).(*limits); ok {
			l = per
		}
	}
	if !l.enabled {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	now := time.Now()
	d := l.take(r, now)
	if l.headers && d.bucket != nil {
		d.setHeaders(w.Header(), now)
	}
	if d.refused {
		h.stats.Inc(statRateLimited)
		if l.enforced {
			if l.retryAfter {
				w.Header()[headerRetryAfter] = []string{strconv.Itoa(max(1, ceilSeconds(d.bucket.wait(now, 1))))}
			}
			httpfilter.CountConsumerRateLimited(r.Context(), h.consumers)
			httpfilter.LocalReply(w, rt, http.StatusTooManyRequests, bodyLimited)
			return
		}
	}
	h.next.ServeHTTP(w, r, rt)
}

// decision is what take decided: refused, and the bucket that refused or,
// when none did, the one closest to its limit (nil: no bucket applied).
type decision struct {
	refused   bool
	bucket    *bucket
	remaining float64
}

// take takes a token from each bucket r falls in, in order, stopping at
// the first that has none: a bucket of each descriptor r matches, then
// the token_bucket when none matched (or always, with
// always_consume_default_token_bucket).
func (l *limits) take(r *http.Request, now time.Time) decision {
	var d decision
	consume := func(b *bucket) bool {
		ok := b.lim.AllowN(now, 1)
		rem := b.lim.TokensAt(now)
		if !ok || d.bucket == nil || rem < d.remaining {
			d.bucket, d.remaining = b, rem
		}
		d.refused = !ok
		return ok
	}
	matched := false
	var buf [descriptor.MaxActions]descriptor.Entry
	for _, acts := range l.actions {
		entries, ok := descriptor.Make(r, acts, buf[:0])
		if !ok {
			continue
		}
		for _, desc := range l.descriptors {
			b := desc.bucketFor(entries)
			if b == nil {
				continue
			}
			matched = true
			if !consume(b) {
				return d
			}
			break
		}
	}
	if l.fallback != nil && (!matched || l.alwaysConsume) {
		consume(l.fallback)
	}
	return d
}

// bucketFor is the descriptor's bucket for entries, nil when they do not
// match it (same keys in order, its values where it has one).
func (desc *limitDescriptor) bucketFor(entries []descriptor.Entry) *bucket {
	if len(entries) != len(desc.entries) {
		return nil
	}
	for i, e := range desc.entries {
		if e.key != entries[i].Key || (e.value != "" && e.value != entries[i].Value) {
			return nil
		}
	}
	if desc.static != nil {
		return desc.static
	}
	var key strings.Builder
	for i, e := range desc.entries {
		if e.value == "" {
			key.WriteString(entries[i].Value)
			key.WriteByte(0)
		}
	}
	return desc.dynamic.get(key.String(), func() *bucket {
		return &bucket{name: desc.name, quota: desc.quota, lim: desc.quota.limiter()}
	})
}

// wait is how long the bucket takes to hold n tokens.
func (b *bucket) wait(now time.Time, n float64) time.Duration {
	missing := n - b.lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(b.lim.Limit()) * float64(time.Second))
}

func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// setHeaders sets the draft-03 and IETF rate limit headers of the bucket.
func (d decision) setHeaders(h http.Header, now time.Time) {
	b := d.bucket
	q := b.quota
	window := strconv.Itoa(max(1, ceilSeconds(q.fill)))
	remaining := strconv.Itoa(max(0, int(math.Floor(d.remaining))))
	reset := strconv.Itoa(ceilSeconds(b.wait(now, float64(q.burst))))
	h[headerLimit] = []string{strconv.Itoa(q.burst) + ", " + strconv.Itoa(q.perFill) + ";w=" + window}
	h[headerRemaining] = []string{remaining}
	h[headerReset] = []string{reset}
	h[headerIETFPolicy] = []string{strconv.Quote(b.name) + ";q=" + strconv.Itoa(q.perFill) + ";w=" + window}
	h[headerIETFLimit] = []string{strconv.Quote(b.name) + ";r=" + remaining + ";t=" + reset}
}
