package h1server

import (
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"
)

// The request checks net/http's server makes, from
// golang.org/x/net/http/httpguts (the copy vendored into the standard
// library, which net/http uses; BSD license, the Go Authors).

// isTokenTable is httpguts' token (tchar) table.
var isTokenTable = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	return t
}()

// validHeaderFieldName is httpguts.ValidHeaderFieldName.
func validHeaderFieldName(v string) bool {
	if len(v) == 0 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !isTokenTable[v[i]] {
			return false
		}
	}
	return true
}

// validHeaderFieldValue is httpguts.ValidHeaderFieldValue: no control byte
// but space and tab.
func validHeaderFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		b := v[i]
		if (b < ' ' || b == 0x7f) && b != ' ' && b != '\t' {
			return false
		}
	}
	return true
}

// validHostByte is httpguts' table of the bytes a Host header may hold.
var validHostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range []byte("!$%&()*+,-.:;=[']_~") {
		t[c] = true
	}
	return t
}()

// validHostHeader is httpguts.ValidHostHeader.
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		if !validHostByte[h[i]] {
			return false
		}
	}
	return true
}

// badTrailer are the fields httpguts.ValidTrailerHeader refuses.
var badTrailer = map[string]bool{
	"Authorization": true, "Cache-Control": true, "Connection": true, "Content-Encoding": true,
	"Content-Length": true, "Content-Range": true, "Content-Type": true, "Expect": true,
	"Host": true, "Keep-Alive": true, "Max-Forwards": true, "Pragma": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Proxy-Connection": true, "Range": true,
	"Realm": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Www-Authenticate": true,
}

// validTrailerHeader is httpguts.ValidTrailerHeader.
func validTrailerHeader(name string) bool {
	name = textproto.CanonicalMIMEHeaderKey(name)
	return !strings.HasPrefix(name, "If-") && !badTrailer[name]
}

// hasToken is net/http's: whether the comma-separated list v holds token,
// ASCII case-insensitively (token is lower case ASCII).
func hasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if b := v[sp]; b != token[0] && b|0x20 != token[0] {
			continue
		}
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if endPos := sp + len(token); endPos != len(v) && !isTokenBoundary(v[endPos]) {
			continue
		}
		if asciiEqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// asciiEqualFold reports whether s and t are equal, ASCII
// case-insensitively (non-ASCII bytes must match exactly).
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if lowerASCII(s[i]) != lowerASCII(t[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + ('a' - 'A')
	}
	return b
}

// headerValuesContainsToken is httpguts.HeaderValuesContainsToken.
func headerValuesContainsToken(values []string, token string) bool {
	for _, v := range values {
		for {
			elem, rest, more := strings.Cut(v, ",")
			if asciiEqualFold(strings.Trim(elem, " \t"), token) {
				return true
			}
			if !more {
				break
			}
			v = rest
		}
	}
	return false
}

// The Date header, formatted once per second.

type dateValue struct {
	unix int64
	b    [len(http.TimeFormat)]byte
}

var cachedDate atomic.Pointer[dateValue]

// currentDate is the current time in http.TimeFormat; the slice is shared
// and must not be modified.
func currentDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.unix == sec {
		return d.b[:]
	}
	d := &dateValue{unix: sec}
	now.UTC().AppendFormat(d.b[:0], http.TimeFormat)
	cachedDate.Store(d)
	return d.b[:]
}
