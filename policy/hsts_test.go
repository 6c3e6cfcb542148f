package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCheckHSTS: the values of the meshgate.dev/hsts listener option.
func TestCheckHSTS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value, want string // want: a part of the problem, "" for valid
	}{
		{"max-age=31536000", ""},
		{"max-age=31536000; includeSubDomains", ""},
		{"max-age=63072000; includeSubDomains; preload", ""},
		{`max-age="0"`, ""},
		{"MAX-AGE=10;INCLUDESUBDOMAINS", ""},
		{"", "empty directive"},
		{"includeSubDomains", "max-age is required"},
		{"max-age=-1", "max-age wants a number"},
		{"max-age=1y", "max-age wants a number"},
		{"max-age", "max-age wants a number"},
		{"max-age=1; max-age=2", "repeated"},
		{"max-age=1; preload=yes", "takes no value"},
		{"max-age=1; always", `unknown directive "always"`},
		{"max-age=1;", "empty directive"},
	} {
		got := CheckHSTS(tc.value)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("CheckHSTS(%q) = %q, want %q", tc.value, got, tc.want)
		}
	}
}

// TestHSTSListenerOption: an HTTPS listener accepts meshgate.dev/hsts; a
// bad value is an error naming the field, and the listener is not
// programmed.
func TestHSTSListenerOption(t *testing.T) {
	t.Parallel()
	cert, key := testPair(t, "c", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	for _, tc := range []struct{ value, want string }{
		{"max-age=31536000; includeSubDomains", ""},
		{"max-age=soon", `gw.yaml:8: spec.listeners[1].tls.options["meshgate.dev/hsts"]: invalid Strict-Transport-Security value "max-age=soon": max-age wants a number`},
	} {
		gw := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge}\nspec:\n  gatewayClassName: meshgate\n  listeners:\n  - {name: http, port: 8080, protocol: HTTP}\n" +
			"  - {name: s, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: c}], options: {meshgate.dev/hsts: '" + tc.value + "'}}}\n"
		r := Evaluate(Input{Files: []File{{Name: "gw.yaml", Data: []byte(gw)}, {Name: "c.yaml", Data: []byte(secretDoc("c", "default", cert, key))}}})
		var errs []string
		for _, e := range r.Errors {
			errs = append(errs, e.Error())
		}
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%q: errors %q, want none", tc.value, errs)
		case tc.want != "" && !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, tc.want) }):
			t.Errorf("%q: errors %q, want one starting with %q", tc.value, errs, tc.want)
		}
	}
}
