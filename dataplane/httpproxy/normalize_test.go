package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	cases := []struct {
		in, want string
		merge    bool
		ok       bool
	}{
		{"/", "/", true, true},
		{"/a/b", "/a/b", true, true},
		{"/a/b/", "/a/b/", true, true},
		{"/%61dmin/x", "/admin/x", true, true},
		{"/x/../admin", "/admin", true, true},
		{"/x/../../admin", "/admin", true, true},
		{"/a/./b", "/a/b", true, true},
		{"/a/b/.", "/a/b/", true, true},
		{"/a/b/..", "/a/", true, true},
		{"//admin//x", "/admin/x", true, true},
		{"//admin//x", "//admin//x", false, true},
		{"/a%2fb", "/a%2fb", true, false},
		{"/a%5Cb", "/a%5Cb", true, false},
		{"/a%zz", "/a%zz", true, false},
		{"/a%2", "/a%2", true, false},
		{"/a%20b", "/a%20b", true, true},
		{"/a%3fb", "/a%3Fb", true, true},
		{"/.%2e/admin", "/admin", true, true},
		{"no-slash", "no-slash", true, false},
		{"/a.b/c..d", "/a.b/c..d", true, true},
	}
	for _, tc := range cases {
		got, ok := normalizePath(tc.in, tc.merge)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("normalizePath(%q, merge=%v) = %q, %v; want %q, %v", tc.in, tc.merge, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNormalizePathNoAllocs(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = normalizePath("/orders/123/items", true)
	})
	if allocs != 0 {
		t.Errorf("normalizing a clean path allocates %v times", allocs)
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%61", "//x//", "/a%2fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		out, ok := normalizePath(p, true)
		if !ok {
			return
		}
		// Normalizing is idempotent, and the result has no dot segments.
		again, ok2 := normalizePath(out, true)
		if !ok2 || again != out {
			t.Fatalf("normalizePath(%q) = %q, but that normalizes to %q (%v)", p, out, again, ok2)
		}
	})
}

func TestNormalizeRequestPath(t *testing.T) {
	cases := []struct {
		target, wantPath string
		ok               bool
	}{
		{"/x/../%61dmin/a%20b", "/admin/a%20b", true},
		{"/a//b", "/a/b", true},
		{"/a%2Fb", "", false},
	}
	for _, tc := range cases {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		ok := normalizeRequestPath(r, true)
		if ok != tc.ok || (ok && r.URL.EscapedPath() != tc.wantPath) {
			t.Errorf("%s: %q %v, want %q %v", tc.target, r.URL.EscapedPath(), ok, tc.wantPath, tc.ok)
		}
	}
}
