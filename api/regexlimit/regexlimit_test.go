package regexlimit

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name, pattern string
		want          error
	}{
		{"simple", "/orders/[0-9]+", nil},
		{"a thousand repeats", ".{1000}", nil},
		{"too long", strings.Repeat("a", MaxBytes+1), ErrTooLong},
		{"too complex", strings.Repeat("a{1000}", 25), ErrTooComplex},
	}
	for _, tc := range cases {
		err := Check(tc.pattern)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := Check("(unclosed"); err == nil {
		t.Error("a syntax error passed")
	}
}
