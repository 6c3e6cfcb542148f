package h1server

import (
	"net/http"
	"sync/atomic"
	"time"
)

// The request checks net/http's server makes are golang.org/x/net/http/httpguts
// (the package net/http uses, through the standard library's copy), called
// directly; hasToken below is net/http's own.

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
