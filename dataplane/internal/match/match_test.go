package match

import (
	"net/http/httptest"
	"regexp/syntax"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshgate/meshgate/internal/testutil"
)

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		sm    *matcherv3.StringMatcher
		value string
		want  bool
	}{
		{"exact", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "abc", true},
		{"exact case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, "ABC", false},
		{"exact ignore_case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}, IgnoreCase: true}, "ABC", true},
		{"prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}}, "abc", true},
		{"prefix ignore_case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "AB"}, IgnoreCase: true}, "abc", true},
		{"prefix longer than value", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "abcd"}}, "abc", false},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "bc"}}, "abc", true},
		{"suffix ignore_case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "BC"}, IgnoreCase: true}, "abc", true},
		{"contains", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "b"}}, "abc", true},
		{"contains ignore_case", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "B"}, IgnoreCase: true}, "abc", true},
		{"regex whole", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a.c"}}}, "abc", true},
		{"regex anchored", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "b"}}}, "abc", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := CompileString(tc.sm)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Match(tc.value); got != tc.want {
				t.Errorf("Match(%q) = %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

func TestStringErrors(t *testing.T) {
	t.Parallel()
	for name, sm := range map[string]*matcherv3.StringMatcher{
		"no pattern":        {},
		"bad regex":         {MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}},
		"regex ignore_case": {MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}, IgnoreCase: true},
	} {
		if _, err := CompileString(sm); err == nil {
			t.Errorf("%s: CompileString succeeded", name)
		}
	}
}

func TestHeader(t *testing.T) {
	t.Parallel()
	exact := func(v string) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}
	}
	present := func(b bool) *routev3.HeaderMatcher_PresentMatch {
		return &routev3.HeaderMatcher_PresentMatch{PresentMatch: b}
	}
	tests := []struct {
		name    string
		hm      *routev3.HeaderMatcher
		headers []string
		want    bool
	}{
		{"method", &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: exact("PUT")}, nil, true},
		{"authority", &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: exact("example.com")}, nil, true},
		{"path with query", &routev3.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: exact("/p?q=1")}, nil, true},
		{"scheme", &routev3.HeaderMatcher{Name: ":scheme", HeaderMatchSpecifier: exact("http")}, nil, true},
		{"value", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: exact("1")}, []string{"X-A", "1"}, true},
		{"joined values", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: exact("1,2")}, []string{"X-A", "1", "X-A", "2"}, true},
		{"missing", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: exact("1")}, nil, false},
		{"missing inverted string match", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: exact("1"), InvertMatch: true}, nil, false},
		{"no specifier: present", &routev3.HeaderMatcher{Name: "x-a"}, []string{"X-A", ""}, true},
		{"present false, missing", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: present(false)}, nil, true},
		{"present false, there", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: present(false)}, []string{"X-A", "1"}, false},
		{"present true inverted, missing", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: present(true), InvertMatch: true}, nil, true},
		{"inverted mismatch", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: exact("1"), InvertMatch: true}, []string{"X-A", "2"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := CompileHeader(tc.hm)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("PUT", "/p?q=1", nil)
			r.Host = "example.com"
			for i := 0; i+1 < len(tc.headers); i += 2 {
				r.Header.Add(tc.headers[i], tc.headers[i+1])
			}
			if got := h.Match(r); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := CompileHeader(&routev3.HeaderMatcher{Name: ":protocol"}); err == nil || !strings.Contains(err.Error(), ":protocol") {
		t.Errorf("pseudo-header error = %v", err)
	}
}

// TestRegexBounds: regexes within the limits compile; longer ones, or
// ones whose program would be too large, are refused with a short error,
// before anything is compiled: a refusal allocates no more than parsing the
// pattern (nothing for one refused by its length), where compiling it would
// allocate megabytes. Allocations, unlike time, do not depend on the
// machine's load. Not parallel: the allocation counters are the process's.
func TestRegexBounds(t *testing.T) {
	huge := strings.Repeat("a", 50<<20)
	tests := []struct {
		name    string
		pattern string
		wantErr string // "" means accepted
	}{
		{"ordinary", "/v[0-9]+/.*", ""},
		{"a thousand repeats", ".{1000}", ""},
		{"50 MB", huge, "longer than the limit"},
		{"just over the length limit", strings.Repeat("a", MaxRegexBytes+1), "longer than the limit"},
		{"repeats multiply", "(?:.{1000}){0,1}(?:[a-z]{1000}){1}(?:(?:x{100}){10}){1}" + strings.Repeat("(?:.{1000})", 20), "program too large"},
		{"many wide classes", strings.Repeat(`\pL{1000}`, 30), "program too large"},
		{"invalid", "(", "missing closing )"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errFull, errPlain error
			compile := func() {
				_, errFull = FullRegex(&matcherv3.RegexMatcher{Regex: tt.pattern})
				_, errPlain = Regex(tt.pattern)
			}
			compile() // warm-up
			used := testutil.Allocated(compile)
			for _, err := range []error{errFull, errPlain} {
				switch {
				case tt.wantErr == "" && err != nil:
					t.Errorf("unexpected error: %v", err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
				case err != nil && len(err.Error()) > 512:
					t.Errorf("error message is %d bytes long", len(err.Error()))
				}
			}
			if tt.wantErr == "" {
				return
			}
			// A parse each (FullRegex and Regex) at most, and the errors:
			// within three parses and 16 KiB, where compiling the program
			// allocates megabytes.
			var parse testutil.Allocation
			if len(tt.pattern) <= MaxRegexBytes {
				parse = testutil.Allocated(func() { _, _ = syntax.Parse(tt.pattern, syntax.Perl) })
			}
			t.Logf("refusal: %+v; a parse: %+v", used, parse)
			if limit := 3*parse.Bytes + 16<<10; used.Bytes > limit {
				t.Errorf("refusing it allocated %d bytes, more than parsing it twice (%d bytes each) and the errors", used.Bytes, parse.Bytes)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"abc", `"abc"`},
		{strings.Repeat("x", 100), `"` + strings.Repeat("x", 64) + `"... (100 bytes)`},
		{strings.Repeat("x", 63) + "é" + "yy", `"` + strings.Repeat("x", 63) + `"... (67 bytes)`}, // never cuts a rune
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%.10q...) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
