// Package match holds the request matchers shared by the router and the RBAC
// filter, compiled from Envoy v3 protos: StringMatcher and the route
// HeaderMatcher (with the pseudo-headers :method, :authority, :path and
// :scheme). Compiled matchers are immutable, safe for concurrent use, and
// match without allocating in the common case (one header value).
package match

import (
	"errors"
	"fmt"
	"github.com/meshgate/meshgate/api/regexlimit"
	"net/http"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// stringKind is the kind of a StringMatcher.
type stringKind uint8

const (
	stringExact stringKind = iota + 1
	stringPrefix
	stringSuffix
	stringContains
	stringRegex
)

// String is a compiled envoy.type.matcher.v3.StringMatcher.
type String struct {
	kind       stringKind
	value      string
	ignoreCase bool
	regex      *regexp.Regexp // stringRegex, anchored
}

// CompileString compiles sm. safe_regex must match the whole value (RE2);
// ignore_case with safe_regex is rejected, as Envoy does.
func CompileString(sm *matcherv3.StringMatcher) (String, error) {
	s := String{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.value = stringExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.value = stringPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.value = stringSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.value = stringContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		if s.ignoreCase {
			return s, errors.New("ignore_case: has no effect with safe_regex (use (?i) in the regex)")
		}
		re, err := FullRegex(p.SafeRegex)
		if err != nil {
			return s, fmt.Errorf("safe_regex: %w", err)
		}
		s.kind, s.regex = stringRegex, re
	default:
		return s, errors.New("one of exact, prefix, suffix, contains, safe_regex is required")
	}
	return s, nil
}

// Match reports whether v matches.
func (s *String) Match(v string) bool {
	switch s.kind {
	case stringExact:
		if s.ignoreCase {
			return strings.EqualFold(v, s.value)
		}
		return v == s.value
	case stringPrefix:
		return HasPrefix(v, s.value, !s.ignoreCase)
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

// Bounds of a regular expression from xDS (api/regexlimit: the control
// plane refuses the same in policy).
const (
	// MaxRegexBytes bounds the length of a regex.
	MaxRegexBytes = regexlimit.MaxBytes
	// MaxRegexProgramSize bounds the estimated number of instructions of a
	// compiled regex.
	MaxRegexProgramSize = regexlimit.MaxProgramSize
	// maxQuoted bounds how much of a rejected regex an error message quotes.
	maxQuoted = 64
)

// FullRegex compiles an RE2 regex that must match the whole input, within
// MaxRegexBytes and MaxRegexProgramSize.
func FullRegex(rm *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	pattern := rm.GetRegex()
	if err := checkRegex(pattern); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + pattern + `)$`)
	if err != nil {
		// Report the error against the user's regex, not the anchored one.
		if _, err2 := regexp.Compile(pattern); err2 != nil {
			err = err2
		}
		return nil, fmt.Errorf("regex %s: %w", Quote(pattern), err)
	}
	return re, nil
}

// Regex compiles an RE2 regex (unanchored) within MaxRegexBytes and
// MaxRegexProgramSize.
func Regex(pattern string) (*regexp.Regexp, error) {
	if err := checkRegex(pattern); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("regex %s: %w", Quote(pattern), err)
	}
	return re, nil
}

// checkRegex refuses a regex too long or whose program would be too large,
// before compiling it.
func checkRegex(pattern string) error {
	if err := regexlimit.Check(pattern); err != nil {
		return fmt.Errorf("regex %s: %w", Quote(pattern), err)
	}
	return nil
}

// Quote quotes s for an error message, shortened to its first bytes when
// long: a NACK must stay small whatever the resource held.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// HasPrefix reports whether s starts with prefix, optionally ignoring ASCII
// and Unicode case.
func HasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
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

// headerSource is where a header matcher reads its value.
type headerSource uint8

const (
	headerFromMap headerSource = iota
	headerFromMethod
	headerFromAuthority
	headerFromPath
	headerFromScheme
)

// Header is a compiled envoy.config.route.v3.HeaderMatcher.
type Header struct {
	source  headerSource
	key     string // canonical key when source is headerFromMap
	present int8   // present_match: 0 unset (string match), 1 true, -1 false
	str     String
	invert  bool
}

// CompileHeader compiles hm: string_match, present_match (no specifier means
// present), invert_match; the pseudo-headers :method, :authority (or host),
// :path and :scheme read the request line.
func CompileHeader(hm *routev3.HeaderMatcher) (Header, error) {
	h := Header{invert: hm.GetInvertMatch()}
	name := strings.ToLower(hm.GetName())
	switch name {
	case "":
		return h, errors.New("name: required")
	case ":method":
		h.source = headerFromMethod
	case ":authority", "host":
		h.source = headerFromAuthority
	case ":path":
		h.source = headerFromPath
	case ":scheme":
		h.source = headerFromScheme
	default:
		if strings.HasPrefix(name, ":") {
			return h, fmt.Errorf("name: pseudo-header %q not supported", name)
		}
		h.key = textproto.CanonicalMIMEHeaderKey(name)
	}
	switch spec := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		h.present = -1
		if spec.PresentMatch {
			h.present = 1
		}
	case *routev3.HeaderMatcher_StringMatch:
		s, err := CompileString(spec.StringMatch)
		if err != nil {
			return h, fmt.Errorf("string_match: %w", err)
		}
		h.str = s
	case nil:
		// Envoy: no specifier means "the header is present".
		h.present = 1
	default:
		return h, fmt.Errorf("%T: not supported, use string_match or present_match", spec)
	}
	return h, nil
}

// Match applies Envoy's HeaderMatcher semantics: a missing header matches
// only present_match false (or present_match true when inverted); otherwise
// the result of the match is inverted by invert_match.
func (h *Header) Match(r *http.Request) bool {
	value, found := h.value(r)
	if !found {
		if h.present == 0 {
			return false
		}
		return (h.present == 1) == h.invert
	}
	var ok bool
	if h.present != 0 {
		ok = h.present == 1
	} else {
		ok = h.str.Match(value)
	}
	return ok != h.invert
}

// value returns the header's value; several values are joined with ",".
func (h *Header) value(r *http.Request) (string, bool) {
	switch h.source {
	case headerFromMethod:
		return r.Method, true
	case headerFromAuthority:
		return r.Host, r.Host != ""
	case headerFromPath:
		if r.RequestURI != "" {
			return r.RequestURI, true
		}
		if r.URL == nil {
			return "", false
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
