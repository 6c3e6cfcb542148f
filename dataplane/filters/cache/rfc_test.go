package cache

import (
	"net/http"
	"testing"
	"time"
)

// TestLifetime: RFC 9111 4.2.1 freshness for a shared cache.
func TestLifetime(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0).UTC()
	date := now.Format(http.TimeFormat)
	for _, tc := range []struct {
		name   string
		header http.Header
		ttl    time.Duration
		want   time.Duration
	}{
		{"max-age", http.Header{"Cache-Control": {"max-age=60"}}, 0, time.Minute},
		{"s-maxage wins", http.Header{"Cache-Control": {"max-age=60, s-maxage=5"}}, 0, 5 * time.Second},
		{"two lines", http.Header{"Cache-Control": {"public", "max-age=7"}}, 0, 7 * time.Second},
		{"quoted", http.Header{"Cache-Control": {`max-age="9"`}}, 0, 9 * time.Second},
		{"duplicate keeps smallest", http.Header{"Cache-Control": {"max-age=60, max-age=3"}}, 0, 3 * time.Second},
		{"invalid is stale", http.Header{"Cache-Control": {"max-age=abc"}}, 0, 0},
		{"huge", http.Header{"Cache-Control": {"max-age=99999999999999999999"}}, 0, (1 << 31) * time.Second},
		{"expires", http.Header{"Date": {date}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 0, time.Hour},
		{"expires past", http.Header{"Date": {date}, "Expires": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0, 0},
		{"expires invalid", http.Header{"Expires": {"0"}}, 0, 0},
		{"max-age over expires", http.Header{"Cache-Control": {"max-age=1"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 0, time.Second},
		{"no headers: heuristics off", http.Header{"Last-Modified": {date}}, 0, 0},
		{"no-cache", http.Header{"Cache-Control": {"no-cache, max-age=60"}}, time.Hour, 0},
		{"ttl override", http.Header{"Cache-Control": {"max-age=60"}}, time.Hour, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := lifetime(tc.header, parseCacheControl(tc.header), tc.ttl, now); got != tc.want {
				t.Errorf("lifetime %v, want %v", got, tc.want)
			}
		})
	}
}

// TestStorable: RFC 9111 section 3 for a shared cache.
func TestStorable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		status                int
		header                http.Header
		authenticated, shared bool
		want                  bool
	}{
		{"200", 200, http.Header{"Cache-Control": {"max-age=1"}}, false, false, true},
		{"404", 404, nil, false, false, true},
		{"500", 500, nil, false, false, false},
		{"206", 206, nil, false, false, false},
		{"no-store", 200, http.Header{"Cache-Control": {"No-Store"}}, false, false, false},
		{"private", 200, http.Header{"Cache-Control": {"private"}}, false, false, false},
		{"vary star", 200, http.Header{"Vary": {"Accept, *"}}, false, false, false},
		{"set-cookie", 200, http.Header{"Set-Cookie": {"a=b"}}, false, false, false},
		{"authenticated per principal", 200, http.Header{"Cache-Control": {"max-age=1"}}, true, false, true},
		{"authenticated shared, max-age only", 200, http.Header{"Cache-Control": {"max-age=1"}}, true, true, false},
		{"authenticated shared, public", 200, http.Header{"Cache-Control": {"public, max-age=1"}}, true, true, true},
		{"authenticated shared, s-maxage", 200, http.Header{"Cache-Control": {"s-maxage=1"}}, true, true, true},
		{"authenticated shared, must-revalidate", 200, http.Header{"Cache-Control": {"must-revalidate, max-age=1"}}, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := storable(tc.status, tc.header, parseCacheControl(tc.header), tc.authenticated, tc.shared); got != tc.want {
				t.Errorf("storable %v, want %v", got, tc.want)
			}
		})
	}
}

// TestETagMatches: weak comparison, lists and *.
func TestETagMatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		inm, etag string
		want      bool
	}{
		{`"a"`, `"a"`, true}, {`W/"a"`, `"a"`, true}, {`"b", "a"`, `W/"a"`, true},
		{`*`, `"a"`, true}, {`"b"`, `"a"`, false}, {`"a"`, ``, false},
	} {
		if got := etagMatches(tc.inm, tc.etag); got != tc.want {
			t.Errorf("etagMatches(%s, %s) = %v, want %v", tc.inm, tc.etag, got, tc.want)
		}
	}
}

// TestCheckValue: bad values are named.
func TestCheckValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		fields map[string]any
		ok     bool
	}{
		{map[string]any{}, true},
		{map[string]any{"max_cache_bytes": 1024}, true},
		{map[string]any{"ttl_seconds": 60, "shared": true, "query_parameters": []any{"page"}, "headers": []any{"x-tenant"}}, true},
		{map[string]any{"ttl_seconds": 0.5}, false},
		{map[string]any{"max_body_bytes": -1}, false},
		{map[string]any{"shared": "yes"}, false},
		{map[string]any{"headers": []any{"bad header"}}, false},
		{map[string]any{"other": 1}, false},
	} {
		if errs := checkValue(value(t, tc.fields)); (len(errs) == 0) != tc.ok {
			t.Errorf("checkValue(%v) = %v, want ok %v", tc.fields, errs, tc.ok)
		}
	}
}
