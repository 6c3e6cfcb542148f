package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// directives is a parsed Cache-Control header (RFC 9111 section 5.2):
// names lowercased; a delta-seconds argument, -1 when absent or invalid.
type directives struct {
	noStore, noCache, private, public, mustRevalidate, proxyRevalidate bool
	maxAge, sMaxAge, staleWhileRevalidate                              int64
}

// parseCacheControl parses every Cache-Control field line of h. A
// directive given twice with different arguments is treated as invalid
// (RFC 9111 section 4.2.1: the response is then stale): -1... but a
// duplicate max-age keeps the smallest, the conservative reading.
func parseCacheControl(h http.Header) directives {
	d := directives{maxAge: -1, sMaxAge: -1, staleWhileRevalidate: -1}
	for _, line := range h["Cache-Control"] {
		for part := range strings.SplitSeq(line, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(part), "=")
			arg = strings.Trim(strings.TrimSpace(arg), `"`)
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store":
				d.noStore = true
			case "no-cache":
				// A no-cache with field names (RFC 9111 5.2.2.4) is read as
				// the unqualified form: the whole response is revalidated.
				d.noCache = true
			case "private":
				d.private = true
			case "public":
				d.public = true
			case "must-revalidate":
				d.mustRevalidate = true
			case "proxy-revalidate":
				d.proxyRevalidate = true
			case "max-age":
				d.maxAge = minSeconds(d.maxAge, arg)
			case "s-maxage":
				d.sMaxAge = minSeconds(d.sMaxAge, arg)
			case "stale-while-revalidate":
				d.staleWhileRevalidate = minSeconds(d.staleWhileRevalidate, arg)
			}
		}
	}
	return d
}

// minSeconds parses delta-seconds (RFC 9111 1.2.2: a value too large is
// 2^31), keeping the smaller of it and prev (-1: none); an invalid value
// is 0, so that the response is stale.
func minSeconds(prev int64, arg string) int64 {
	n, err := strconv.ParseInt(arg, 10, 64)
	switch {
	case err != nil && strings.Trim(arg, "0123456789") == "" && arg != "":
		n = 1 << 31
	case err != nil || n < 0:
		n = 0
	}
	if prev >= 0 && prev < n {
		return prev
	}
	return n
}

// cacheableStatus are the status codes a response may be stored with
// (RFC 9110 15.1's heuristically cacheable ones, plus 308; explicit
// freshness is required anyway: heuristic freshness is off).
func cacheableStatus(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// storable reports whether a shared cache may store a response (RFC 9111
// section 3): not no-store or private, a cacheable status, no Vary: *, no
// Set-Cookie (a per-user header), and, to a request with credentials on
// a shared route, one of public, s-maxage or must-revalidate (3.5).
// Freshness is checked apart (lifetime).
func storable(status int, h http.Header, cc directives, authenticated, shared bool) bool {
	if cc.noStore || cc.private || !cacheableStatus(status) || len(h["Set-Cookie"]) > 0 {
		return false
	}
	for _, v := range h.Values("Vary") {
		if strings.Contains(v, "*") {
			return false
		}
	}
	if authenticated && shared && !cc.public && cc.sMaxAge < 0 && !cc.mustRevalidate {
		return false
	}
	return true
}

// lifetime is a response's freshness lifetime for a shared cache (RFC 9111
// section 4.2.1): s-maxage, else max-age, else Expires minus Date; 0 when
// none (heuristic freshness is off) and for no-cache. ttl, when not zero,
// overrides the headers (but not no-cache).
func lifetime(h http.Header, cc directives, ttl time.Duration, responseTime time.Time) time.Duration {
	switch {
	case cc.noCache:
		return 0
	case ttl > 0:
		return ttl
	case cc.sMaxAge >= 0:
		return time.Duration(cc.sMaxAge) * time.Second
	case cc.maxAge >= 0:
		return time.Duration(cc.maxAge) * time.Second
	}
	expires := h.Get("Expires")
	if expires == "" {
		return 0
	}
	exp, err := http.ParseTime(expires)
	if err != nil {
		return 0 // an invalid Expires is in the past (5.3)
	}
	date := responseTime
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		date = d
	}
	return max(exp.Sub(date), 0)
}

// initialAge is the age of a response when it was received (RFC 9111
// 4.2.3, the proxy's hop taken as instantaneous): its Age header, or
// now minus its Date when later.
func initialAge(h http.Header, responseTime time.Time) time.Duration {
	var age time.Duration
	if n, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && n > 0 {
		age = time.Duration(min(n, 1<<31)) * time.Second
	}
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		age = max(age, responseTime.Sub(d))
	}
	return age
}

// noStoreRequest reports whether a request asks not to be stored or
// served from the cache (no-store), and whether it asks for a validated
// response (no-cache, or max-age=0).
func requestDirectives(h http.Header) (noStore, noCache bool) {
	if len(h["Cache-Control"]) == 0 && len(h["Pragma"]) == 0 {
		return false, false
	}
	cc := parseCacheControl(h)
	pragmaNoCache := len(h["Cache-Control"]) == 0 && strings.Contains(strings.ToLower(strings.Join(h["Pragma"], ",")), "no-cache")
	return cc.noStore, cc.noCache || cc.maxAge == 0 || pragmaNoCache
}

// etagMatches reports whether an If-None-Match header matches etag (weak
// comparison, RFC 9110 13.1.2).
func etagMatches(ifNoneMatch, etag string) bool {
	if etag == "" {
		return false
	}
	weak := func(s string) string { return strings.TrimPrefix(strings.TrimSpace(s), "W/") }
	for cand := range strings.SplitSeq(ifNoneMatch, ",") {
		if c := strings.TrimSpace(cand); c == "*" || weak(c) == weak(etag) {
			return true
		}
	}
	return false
}
