package router

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/meshgate/meshgate/dataplane/internal/match"
)

func (m *routeMatch) matches(r *http.Request, path string) bool {
	if !m.matchesPath(path) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].Match(r) {
			return false
		}
	}
	for i := range m.queries {
		if !m.queries[i].matches(r.URL.RawQuery) {
			return false
		}
	}
	return !m.grpc || IsGRPC(r) || isGRPCWeb(r)
}

// isGRPCWeb reports whether a request is a gRPC-Web call (content-type
// application/grpc-web...): the route is chosen before the grpc_web filter
// makes it a gRPC call, so the grpc match option takes it too.
func isGRPCWeb(r *http.Request) bool {
	const web = "application/grpc-web"
	ct := r.Header.Get("Content-Type")
	return len(ct) >= len(web) && strings.EqualFold(ct[:len(web)], web)
}

// IsGRPC reports whether a request is a gRPC call: its content-type is
// application/grpc, or application/grpc+<codec> or ;<params> (as Envoy's
// Grpc::Common::isGrpcRequestHeaders reads it; gRPC-Web's
// application/grpc-web is not).
func IsGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	const grpc = "application/grpc"
	if len(ct) < len(grpc) || !strings.EqualFold(ct[:len(grpc)], grpc) {
		return false
	}
	return len(ct) == len(grpc) || ct[len(grpc)] == '+' || ct[len(grpc)] == ';'
}

func (m *routeMatch) matchesPath(path string) bool {
	switch m.kind {
	case pathPrefix:
		return match.HasPrefix(path, m.value, m.caseSensitive)
	case pathExact:
		if m.caseSensitive {
			return path == m.value
		}
		return strings.EqualFold(path, m.value)
	case pathSeparatedPrefix:
		if !match.HasPrefix(path, m.value, m.caseSensitive) {
			return false
		}
		return len(path) == len(m.value) || path[len(m.value)] == '/'
	case pathRegex:
		return m.regex.MatchString(path)
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
	return q.str.Match(value)
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
