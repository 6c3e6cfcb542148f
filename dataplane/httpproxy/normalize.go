package httpproxy

import (
	"net/http"
	"strings"
)

// normalizeRequestPath normalizes r's path in place; false when the path must
// be refused.
func normalizeRequestPath(r *http.Request, mergeSlashes bool) bool {
	if r.URL.Opaque != "" {
		return false
	}
	escaped := r.URL.EscapedPath()
	if escaped == "" { // "GET http://host HTTP/1.1" (absolute form, no path)
		escaped = "/"
	}
	p, ok := normalizePath(escaped, mergeSlashes)
	if !ok {
		return false
	}
	if p != escaped {
		setEscapedPath(r.URL, p)
	}
	return true
}

// normalizePath returns the normalized form of an escaped request path, as
// Envoy's normalize_path and merge_slashes do (RFC 3986 section 6):
// percent-encodings of unreserved characters are decoded, other
// percent-encodings upper-cased, "." and ".." segments removed, and, when
// mergeSlashes, runs of "/" merged. Routing and authorization then see one
// spelling of each path, so a policy on /admin/* cannot be bypassed with
// /%61dmin/x or /x/../admin.
//
// ok is false for a path that must be refused: not starting with "/", a bad
// percent-encoding, or an encoded "/" or "\" (%2F, %5C), which a backend may
// decode into a path the policy did not see.
//
// The common case (nothing to change) allocates nothing.
func normalizePath(p string, mergeSlashes bool) (out string, ok bool) {
	if p == "" || p[0] != '/' {
		return p, false
	}
	if !needsNormalizing(p, mergeSlashes) {
		return p, true
	}
	// Decode unreserved escapes, refuse bad or slash escapes.
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return p, false
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		switch {
		case v == '/' || v == '\\':
			return p, false
		case isUnreserved(v):
			b.WriteByte(v)
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex(p[i+1]))
			b.WriteByte(upperHex(p[i+2]))
		}
		i += 2
	}
	return removeDotSegments(b.String(), mergeSlashes), true
}

// needsNormalizing reports whether p has anything normalizePath would change
// or refuse.
func needsNormalizing(p string, mergeSlashes bool) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			return true
		case '/':
			if i+1 < len(p) {
				n := p[i+1]
				if n == '.' || (mergeSlashes && n == '/') {
					return true
				}
			}
		}
	}
	return false
}

// removeDotSegments resolves "." and ".." segments (never above the root)
// and, when mergeSlashes, drops empty segments; a trailing slash is kept.
func removeDotSegments(p string, mergeSlashes bool) string {
	segments := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segments))
	for i, s := range segments {
		last := i == len(segments)-1
		switch {
		case s == ".":
			if last {
				out = append(out, "")
			}
		case s == "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		case s == "" && mergeSlashes && !last:
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func upperHex(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
