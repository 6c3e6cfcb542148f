package router

import (
	"net/http"
	"net/url"
	"strings"
)

func (m *routeMatch) matches(r *http.Request, path string) bool {
	if !m.matchesPath(path) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(r) {
			return false
		}
	}
	for i := range m.queries {
		if !m.queries[i].matches(r.URL.RawQuery) {
			return false
		}
	}
	return true
}

func (m *routeMatch) matchesPath(path string) bool {
	switch m.kind {
	case pathPrefix:
		return hasPrefix(path, m.value, m.caseSensitive)
	case pathExact:
		if m.caseSensitive {
			return path == m.value
		}
		return strings.EqualFold(path, m.value)
	case pathSeparatedPrefix:
		if !hasPrefix(path, m.value, m.caseSensitive) {
			return false
		}
		return len(path) == len(m.value) || path[len(m.value)] == '/'
	case pathRegex:
		return m.regex.MatchString(path)
	}
	return false
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// matches applies Envoy's HeaderMatcher semantics: a missing header matches
// only present_match false (or present_match true when inverted); otherwise
// the result of the match is inverted by invert_match.
func (h *headerMatcher) matches(r *http.Request) bool {
	value, found := h.value(r)
	if !found {
		if h.present == nil {
			return false
		}
		return *h.present == h.invert
	}
	var ok bool
	if h.present != nil {
		ok = *h.present
	} else {
		ok = h.str.matches(value)
	}
	return ok != h.invert
}

// value returns the header's value; several values are joined with ",".
func (h *headerMatcher) value(r *http.Request) (string, bool) {
	switch h.source {
	case headerFromMethod:
		return r.Method, true
	case headerFromAuthority:
		return r.Host, r.Host != ""
	case headerFromPath:
		if r.RequestURI != "" {
			return r.RequestURI, true
		}
		return r.URL.RequestURI(), true
	case headerFromScheme:
		if r.TLS != nil {
			return "https", true
		}
		return "http", true
	}
	values := r.Header[h.key]
	switch len(values) {
	case 0:
		return "", false
	case 1:
		return values[0], true
	}
	return strings.Join(values, ","), true
}

func (s *stringMatcher) matches(v string) bool {
	switch s.kind {
	case stringExact:
		if s.ignoreCase {
			return strings.EqualFold(v, s.value)
		}
		return v == s.value
	case stringPrefix:
		return hasPrefix(v, s.value, !s.ignoreCase)
	case stringSuffix:
		if len(v) < len(s.value) {
			return false
		}
		if s.ignoreCase {
			return strings.EqualFold(v[len(v)-len(s.value):], s.value)
		}
		return strings.HasSuffix(v, s.value)
	case stringContains:
		if s.ignoreCase {
			return containsFold(v, s.value)
		}
		return strings.Contains(v, s.value)
	case stringRegex:
		return s.regex.MatchString(v)
	}
	return false
}

// containsFold reports whether sub is in s, case-insensitively.
func containsFold(s, sub string) bool {
	if len(sub) == 0 {
		return true
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// matches looks up the first value of the parameter in the raw query, as
// Envoy does, decoding names and values.
func (q *queryMatcher) matches(rawQuery string) bool {
	value, found := firstQueryValue(rawQuery, q.name)
	if !found {
		return false
	}
	if q.present {
		return true
	}
	return q.str.matches(value)
}

func firstQueryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		key, value, _ := strings.Cut(pair, "=")
		if needsUnescape(key) {
			k, err := url.QueryUnescape(key)
			if err != nil {
				continue
			}
			key = k
		}
		if key != name {
			continue
		}
		if needsUnescape(value) {
			v, err := url.QueryUnescape(value)
			if err != nil {
				return value, true
			}
			value = v
		}
		return value, true
	}
	return "", false
}

func needsUnescape(s string) bool {
	return strings.ContainsAny(s, "%+")
}
