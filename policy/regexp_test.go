package policy

import (
	"strings"
	"testing"
)

// TestCheckRegexpLimits: policy refuses the regular expressions the proxies
// would NACK (api/regexlimit), with a short message.
func TestCheckRegexpLimits(t *testing.T) {
	cases := []struct {
		re, want string
	}{
		{"/orders/[0-9]+", ""},
		{strings.Repeat("a{1000}", 25), "regex program too large"},
		{strings.Repeat("a", 20<<10), "regex longer than the limit"},
		{"(unclosed", "invalid regular expression"},
	}
	for _, tc := range cases {
		got := checkRegexp(tc.re)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("checkRegexp(%.20q) = %q, want %q", tc.re, got, tc.want)
		}
		if len(got) > 200 {
			t.Errorf("message of %d bytes quotes the whole regex", len(got))
		}
	}
}
