package localratelimit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/time/rate"

	"github.com/meshgate/meshgate/dataplane/filters/internal/descriptor"
)

// Bounds of the buckets.
const (
	// minFillInterval is Envoy's: a shorter fill_interval is refused.
	minFillInterval = 50 * time.Millisecond
	// defaultMaxDynamic is Envoy's default max_dynamic_descriptors.
	defaultMaxDynamic = 20
	// maxDynamic bounds max_dynamic_descriptors: each key's bucket costs
	// memory.
	maxDynamic = 100_000
)

// limits is a compiled LocalRateLimit: its buckets and how a request's
// descriptors are made. The buckets live as long as the config (a new
// route configuration starts them full).
type limits struct {
	enabled, enforced bool
	// fallback is the token_bucket: consumed by a request no descriptor
	// matched, or by every request with alwaysConsume; nil: none.
	fallback      *bucket
	alwaysConsume bool
	descriptors   []*limitDescriptor
	actions       [][]descriptor.Action // the rate_limits, each a list of actions
	headers       bool                  // draft-03 and IETF rate limit headers
	retryAfter    bool
}

// quota is a bucket's shape: burst tokens, refilled perFill every fill.
type quota struct {
	burst   int
	perFill int
	fill    time.Duration
}

// limiter returns a full bucket of the quota.
func (q quota) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(q.perFill)/q.fill.Seconds()), q.burst)
}

// bucket is one token bucket and the name its headers give it.
type bucket struct {
	name  string
	quota quota
	lim   *rate.Limiter
}

// limitDescriptor is one configured descriptor: entries to match (an empty
// value matches any value, with a bucket per value) and its bucket.
type limitDescriptor struct {
	entries []entry
	name    string
	quota   quota
	static  *bucket // when no entry is a wildcard
	dynamic *lru    // buckets per distinct values otherwise
}

type entry struct{ key, value string }

func compile(cfg *localratelimitv3.LocalRateLimit) (*limits, error) {
	l := &limits{
		enabled:       fullOrNothing(cfg.GetFilterEnabled()),
		enforced:      fullOrNothing(cfg.GetFilterEnforced()),
		alwaysConsume: cfg.GetAlwaysConsumeDefaultTokenBucket() == nil || cfg.GetAlwaysConsumeDefaultTokenBucket().GetValue(),
		headers:       cfg.GetEnableXRatelimitHeaders() == ratelimitcommonv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		retryAfter:    cfg.GetEnableRetryAfterHeader(),
	}
	for _, p := range []*corev3.RuntimeFractionalPercent{cfg.GetFilterEnabled(), cfg.GetFilterEnforced()} {
		if p != nil && !fullOrNothing(p) && !none(p) {
			return nil, fmt.Errorf("filter_enabled, filter_enforced: %v: only 0%% and 100%% are supported", p.GetDefaultValue())
		}
	}
	if tb := cfg.GetTokenBucket(); tb != nil {
		q, err := compileQuota(tb)
		if err != nil {
			return nil, fmt.Errorf("token_bucket.%w", err)
		}
		l.fallback = &bucket{name: "default", quota: q, lim: q.limiter()}
	} else if l.enabled {
		return nil, errors.New("token_bucket: required when the filter is enabled")
	}
	max := defaultMaxDynamic
	if v := cfg.GetMaxDynamicDescriptors(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > maxDynamic {
			return nil, fmt.Errorf("max_dynamic_descriptors: %d: want 1 to %d", v.GetValue(), maxDynamic)
		}
		max = int(v.GetValue())
	}
	for i, d := range cfg.GetDescriptors() {
		cd, err := compileDescriptor(d, max)
		if err != nil {
			return nil, fmt.Errorf("descriptors[%d].%w", i, err)
		}
		l.descriptors = append(l.descriptors, cd)
	}
	for i, rl := range cfg.GetRateLimits() {
		acts, err := descriptor.Compile(rl)
		if err != nil {
			return nil, fmt.Errorf("rate_limits[%d].%w", i, err)
		}
		l.actions = append(l.actions, acts)
	}
	return l, nil
}

// fullOrNothing reports whether a RuntimeFractionalPercent is 100% (its
// default value: the proxy has no runtime).
func fullOrNothing(p *corev3.RuntimeFractionalPercent) bool {
	d := p.GetDefaultValue()
	if d == nil {
		return false
	}
	return uint64(d.GetNumerator()) >= denominator(d.GetDenominator())
}

func none(p *corev3.RuntimeFractionalPercent) bool { return p.GetDefaultValue().GetNumerator() == 0 }

func denominator(d typev3.FractionalPercent_DenominatorType) uint64 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10_000
	case typev3.FractionalPercent_MILLION:
		return 1_000_000
	}
	return 100
}

func compileQuota(tb *typev3.TokenBucket) (quota, error) {
	q := quota{burst: int(tb.GetMaxTokens()), perFill: 1}
	if q.burst < 1 {
		return quota{}, errors.New("max_tokens: want 1 or more")
	}
	if v := tb.GetTokensPerFill(); v != nil {
		if v.GetValue() < 1 {
			return quota{}, errors.New("tokens_per_fill: want 1 or more")
		}
		q.perFill = int(v.GetValue())
	}
	fi := tb.GetFillInterval()
	if err := fi.CheckValid(); err != nil || fi.AsDuration() < minFillInterval {
		return quota{}, fmt.Errorf("fill_interval: %v: want at least %v", fi.AsDuration(), minFillInterval)
	}
	q.fill = fi.AsDuration()
	return q, nil
}

func compileDescriptor(d *ratelimitcommonv3.LocalRateLimitDescriptor, max int) (*limitDescriptor, error) {
	q, err := compileQuota(d.GetTokenBucket())
	if err != nil {
		return nil, fmt.Errorf("token_bucket.%w", err)
	}
	cd := &limitDescriptor{quota: q}
	wildcard := false
	var names []string
	for _, e := range d.GetEntries() {
		if e.GetKey() == "" {
			return nil, errors.New("entries: key is required")
		}
		cd.entries = append(cd.entries, entry{key: e.GetKey(), value: e.GetValue()})
		wildcard = wildcard || e.GetValue() == ""
		if e.GetValue() != "" {
			names = append(names, e.GetValue())
		}
	}
	cd.name = strings.Join(names, ".")
	if cd.name == "" {
		cd.name = "descriptor"
	}
	if wildcard {
		cd.dynamic = newLRU(max)
	} else {
		cd.static = &bucket{name: cd.name, quota: q, lim: q.limiter()}
	}
	return cd, nil
}
