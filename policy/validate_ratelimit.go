package policy

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// maxRateLimitRules bounds the rules of a local or global rate limit.
const maxRateLimitRules = 16

// RateLimitUnitDuration is the duration of a rate limit unit, 0 for an
// unknown one.
func RateLimitUnitDuration(unit string) time.Duration {
	switch unit {
	case RateLimitSecond:
		return time.Second
	case RateLimitMinute:
		return time.Minute
	case RateLimitHour:
		return time.Hour
	case RateLimitDay:
		return 24 * time.Hour
	}
	return 0
}

func (l *loader) checkRateLimit(src Source, rl *RateLimit) {
	const p = "spec.rateLimit"
	if rl.Local == nil && rl.Global == nil {
		l.errorf(src, p, "rateLimit needs local, global or both")
	}
	if lo := rl.Local; lo != nil {
		l.checkRateLimitRules(src, p+".local", lo.Rules)
		if v := lo.MaxKeys; v != nil && (*v < 1 || *v > MaxRateLimitKeys) {
			l.errorf(src, p+".local.maxKeys", "%d: want 1 to %d", *v, MaxRateLimitKeys)
		}
	}
	if g := rl.Global; g != nil {
		if len(l.meshConfigs) == 0 || l.meshConfigs[0].Spec.RateLimitService == nil {
			l.errorf(src, p+".global", "global limits need the rate-limit service: MeshConfig spec.rateLimitService")
		}
		l.checkRateLimitRules(src, p+".global", g.Rules)
		for i, r := range g.Rules {
			if r.Limit.Burst != nil {
				l.errorf(src, fmt.Sprintf("%s.global.rules[%d].limit.burst", p, i), "a global limit counts requests per window: no burst")
			}
		}
		if g.FailureMode != "" && g.FailureMode != RateLimitFailAllow && g.FailureMode != RateLimitFailDeny {
			l.errorf(src, p+".global.failureMode", "%q: want %s or %s", g.FailureMode, RateLimitFailAllow, RateLimitFailDeny)
		}
	}
}

func (l *loader) checkRateLimitService(src Source, s *RateLimitService) {
	const p = "spec.rateLimitService"
	if _, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
		l.errorf(src, p+".address", "%q: want host:port", s.Address)
	}
	if s.Timeout != "" {
		if d, ok := l.checkDuration(src, p+".timeout", s.Timeout, time.Millisecond); ok && d > 10*time.Second {
			l.errorf(src, p+".timeout", "%s: at most 10s", s.Timeout)
		}
	}
}

func (l *loader) checkRateLimitRules(src Source, p string, rules []RateLimitRule) {
	if len(rules) == 0 {
		l.errorf(src, p+".rules", "at least one rule is required")
	}
	if len(rules) > maxRateLimitRules {
		l.errorf(src, p+".rules", "%d rules: at most %d", len(rules), maxRateLimitRules)
	}
	keyless := -1
	for i, r := range rules {
		rp := fmt.Sprintf("%s.rules[%d]", p, i)
		if r.Limit.Requests < 1 {
			l.errorf(src, rp+".limit.requests", "%d: want 1 or more", r.Limit.Requests)
		}
		if !slices.Contains(RateLimitUnits, r.Limit.Unit) {
			l.errorf(src, rp+".limit.unit", "%q: want one of %s", r.Limit.Unit, strings.Join(RateLimitUnits, ", "))
		}
		if b := r.Limit.Burst; b != nil && *b < 1 {
			l.errorf(src, rp+".limit.burst", "%d: want 1 or more", *b)
		}
		if r.Key == nil {
			if keyless >= 0 {
				l.errorf(src, rp+".key", "a key is required: %s.rules[%d] already limits every request", p, keyless)
			}
			keyless = i
			continue
		}
		k := r.Key
		n := 0
		if k.ClientIP != nil {
			n++
			if v := k.ClientIP.PrefixLength; v != nil && (*v < 1 || *v > 32) {
				l.errorf(src, rp+".key.clientIP.prefixLength", "%d: want 1 to 32", *v)
			}
			if v := k.ClientIP.PrefixLengthV6; v != nil && (*v < 1 || *v > 128) {
				l.errorf(src, rp+".key.clientIP.prefixLengthV6", "%d: want 1 to 128", *v)
			}
		}
		if k.Header != "" {
			n++
			if msg := checkHeaderName(k.Header); msg != "" {
				l.errorf(src, rp+".key.header", "%s", msg)
			}
		}
		if k.Principal != nil {
			n++
		}
		if k.Claim != nil {
			n++
			if k.Claim.Name == "" {
				l.errorf(src, rp+".key.claim.name", "required")
			} else if len(k.Claim.Name) > maxClaimKeyName || strings.ContainsAny(k.Claim.Name, ".\x00") {
				l.errorf(src, rp+".key.claim.name", "%q: want a top-level claim name of at most %d characters, without dots", k.Claim.Name, maxClaimKeyName)
			}
		}
		if n != 1 {
			l.errorf(src, rp+".key", "exactly one of clientIP, header, principal and claim is required")
		}
	}
}

// maxClaimKeyName bounds a claim key's name.
const maxClaimKeyName = 256
