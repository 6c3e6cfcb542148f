package cache

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// TypeURL is the type_url of the xds.type.v3.TypedStruct carrying the
// filter's config (docs/xds.md "Response caching"). Envoy's cache filter
// (envoy.extensions.filters.http.cache.v3.CacheConfig) has no per-route
// config, no TTL override, no per-principal keying and no byte budget, so
// the filter is meshgate's, its http_filters entry and per-route
// FilterConfig optional (is_optional) for an Envoy to skip.
const TypeURL = "meshgate.dev/filters.http.cache.v1.Cache"

// Fields of the TypedStruct's value. The listener-level value has
// max_cache_bytes only; a per-route value the others (a route without one
// is not cached). The names follow Envoy's CacheConfig where it has the
// setting.
const (
	fieldMaxCacheBytes        = "max_cache_bytes"
	fieldMaxBodyBytes         = "max_body_bytes"
	fieldTTLSeconds           = "ttl_seconds"
	fieldStaleWhileRevalidate = "stale_while_revalidate_seconds"
	fieldShared               = "shared"
	fieldQueryParameters      = "query_parameters"
	fieldHeaders              = "headers"
	fieldAllowedVaryHeaders   = "allowed_vary_headers"
)

// Bounds of the values.
const (
	// DefaultMaxCacheBytes is a listener's byte budget when its value has
	// none (64 MiB).
	DefaultMaxCacheBytes = 64 << 20
	// MaxCacheBytes bounds max_cache_bytes (4 GiB).
	MaxCacheBytes = 4 << 30
	// DefaultMaxBodyBytes is the largest body a route stores when its value
	// has no max_body_bytes (1 MiB).
	DefaultMaxBodyBytes = 1 << 20
	// MaxBodyBytes bounds max_body_bytes (64 MiB).
	MaxBodyBytes = 64 << 20
	// MaxSeconds bounds ttl_seconds and stale_while_revalidate_seconds (1
	// year).
	MaxSeconds = 365 * 24 * 3600
	// MaxNames bounds each list of names.
	MaxNames = 32
)

var listenerFields = []string{fieldMaxCacheBytes}

var routeFields = []string{fieldMaxBodyBytes, fieldTTLSeconds, fieldStaleWhileRevalidate, fieldShared,
	fieldQueryParameters, fieldHeaders, fieldAllowedVaryHeaders}

// listenerConfig is a compiled listener-level value.
type listenerConfig struct{ maxCacheBytes int64 }

// routeConfig is a compiled per-route value: the route is cached.
type routeConfig struct {
	maxBodyBytes int64
	// ttl, when not zero, is the freshness lifetime of every stored
	// response, in place of the one its headers give.
	ttl time.Duration
	// staleWhileRevalidate is how long past its lifetime a response is
	// served (STALE) while it is refreshed, unless its own
	// Cache-Control stale-while-revalidate says longer.
	staleWhileRevalidate time.Duration
	// shared: responses to authenticated requests are cached once for
	// every caller (only those RFC 9111 section 3.5 allows a shared cache
	// to store), not per principal.
	shared bool
	// queryParameters in the key (canonical order); nil: the whole query.
	queryParameters []string
	// headers: request headers in the key (canonical names).
	headers []string
	// allowedVary: the headers a response may vary on (canonical); a
	// response varying on another is not stored. Empty: any.
	allowedVary map[string]bool
}

// checkValue is the filter's part of the subset of docs/xds.md.
func checkValue(v *structpb.Struct) []xdscheck.Violation {
	var out []xdscheck.Violation
	known := append(slices.Clone(listenerFields), routeFields...)
	for _, key := range slices.Sorted(maps.Keys(v.GetFields())) {
		if !slices.Contains(known, key) {
			out = append(out, xdscheck.Violation{Path: strconv.Quote(key), Reason: "not supported"})
		}
	}
	if _, err := compileListener(v); err != nil {
		out = append(out, xdscheck.Violation{Path: "value", Reason: err.Error()})
	}
	if _, err := compileRoute(v); err != nil {
		out = append(out, xdscheck.Violation{Path: "value", Reason: err.Error()})
	}
	return out
}

func compileListener(v *structpb.Struct) (listenerConfig, error) {
	n, err := number(v, fieldMaxCacheBytes, 1, MaxCacheBytes)
	if err != nil {
		return listenerConfig{}, err
	}
	return listenerConfig{maxCacheBytes: cmpOr(n, DefaultMaxCacheBytes)}, nil
}

func compileRoute(v *structpb.Struct) (*routeConfig, error) {
	rc := &routeConfig{}
	var err error
	if rc.maxBodyBytes, err = number(v, fieldMaxBodyBytes, 1, MaxBodyBytes); err != nil {
		return nil, err
	}
	rc.maxBodyBytes = cmpOr(rc.maxBodyBytes, DefaultMaxBodyBytes)
	ttl, err := number(v, fieldTTLSeconds, 1, MaxSeconds)
	if err != nil {
		return nil, err
	}
	rc.ttl = time.Duration(ttl) * time.Second
	swr, err := number(v, fieldStaleWhileRevalidate, 1, MaxSeconds)
	if err != nil {
		return nil, err
	}
	rc.staleWhileRevalidate = time.Duration(swr) * time.Second
	if f, ok := v.GetFields()[fieldShared]; ok {
		b, isBool := f.GetKind().(*structpb.Value_BoolValue)
		if !isBool {
			return nil, fmt.Errorf("%s: want a bool", fieldShared)
		}
		rc.shared = b.BoolValue
	}
	if rc.queryParameters, err = names(v, fieldQueryParameters, false); err != nil {
		return nil, err
	}
	if rc.headers, err = names(v, fieldHeaders, true); err != nil {
		return nil, err
	}
	vary, err := names(v, fieldAllowedVaryHeaders, true)
	if err != nil {
		return nil, err
	}
	if len(vary) > 0 {
		rc.allowedVary = make(map[string]bool, len(vary))
		for _, h := range vary {
			rc.allowedVary[h] = true
		}
	}
	return rc, nil
}

// number reads a whole number field from lo to hi; 0 when absent.
func number(v *structpb.Struct, field string, lo, hi int64) (int64, error) {
	f, ok := v.GetFields()[field]
	if !ok {
		return 0, nil
	}
	n, isNumber := f.GetKind().(*structpb.Value_NumberValue)
	if !isNumber {
		return 0, fmt.Errorf("%s: want a number", field)
	}
	x := n.NumberValue
	if x != math.Trunc(x) || x < float64(lo) || x > float64(hi) {
		return 0, fmt.Errorf("%s: %v: want a whole number from %d to %d", field, x, lo, hi)
	}
	return int64(x), nil
}

// names reads a list of non-empty strings (header names canonicalized),
// sorted and without duplicates; nil when absent.
func names(v *structpb.Struct, field string, header bool) ([]string, error) {
	f, ok := v.GetFields()[field]
	if !ok {
		return nil, nil
	}
	l, isList := f.GetKind().(*structpb.Value_ListValue)
	if !isList {
		return nil, fmt.Errorf("%s: want a list of strings", field)
	}
	if len(l.ListValue.GetValues()) > MaxNames {
		return nil, fmt.Errorf("%s: at most %d names", field, MaxNames)
	}
	out := make([]string, 0, len(l.ListValue.GetValues()))
	for i, item := range l.ListValue.GetValues() {
		s, isString := item.GetKind().(*structpb.Value_StringValue)
		if !isString || s.StringValue == "" {
			return nil, fmt.Errorf("%s[%d]: want a non-empty string", field, i)
		}
		name := s.StringValue
		if header {
			if !validToken(name) {
				return nil, fmt.Errorf("%s[%d]: %q: not a header name", field, i, name)
			}
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func validToken(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return s != ""
}

func cmpOr(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

var errNotStruct = errors.New("want a Struct")
